"""Position budgets, exact: `max_critical_tokens` and the model's context are never exceeded (SPEC §6).

A request may end at any step (a budget, a stop, an abort, an error); its open paths are then closed with forced
`</Path>` tokens (`request.close_open_paths`), and those take positions too. So the quantity kept within the cap
is the *reach*: the largest position the final ids would hold if the request ended now, closing tokens included.

- A running path at position p with k open `<Path>`s (its own and sequential ones inside it) closes at p+1..p+k;
  the root closes nothing. A closed path reached its `</Path>`. A forked branch waits: its closing tokens follow
  its block's paths, at m+1.. where m is the largest end of its children (the core's layout puts any token after a
  block's last path at m+1).
- A path held back by the path cap (not started) gets its forced prefix and one `</Path>` at an early end.
- Under merge="refresh" the joined paths are re-encoded at sequential positions: the positions the engine
  tracks (`state.position`) are the ones the model sees, and they are the ones kept within the cap.
- `Branch.owed` carries the closing tokens of the enclosing paths down to a child at fork, so one branch's
  reach plus its `owed` bounds the request's final positions along that chain.

The scheduler places a token only if the reach stays within the cap: a fork whose forced `<Path> LABEL :`
prefixes would not fit ends the request before its `</Goal>`, a merge whose `<Conclusion>` would not fit ends it
after the last `</Path>`. It ends the request as soon as some running branch has no room for one more token.
"""
from __future__ import annotations

from engine.branch import Branch, Status
from multiverse.tags import TagIds

UNLIMITED = 2**62


def closers(branch: Branch) -> int:
    """`</Path>` tokens an early end appends to this branch itself: its open paths (none for the root)."""
    return 0 if branch.parent is None else max(1, branch.state.open_paths)


def reach(branch: Branch) -> int:
    """The largest position of this branch's subtree in the final ids if the request ended now (`owed` aside)."""
    if branch.status is Status.CLOSING:
        return branch.end_position
    if branch.status is Status.DEFERRED:  # held back (path cap): an early end places its prefix, then </Path>
        return branch.state.position + len(branch.prefix) + 1
    if branch.status is Status.WAITING and branch.forks:
        return max(reach(child) for child in branch.forks[-1][1]) + closers(branch)
    return branch.state.position + closers(branch)


def reach_after(branch: Branch, token: int, tags: TagIds) -> int:
    """Reach + owed of a running branch once `token` is placed on it (a `</Goal>` that forks aside)."""
    extra = 0
    if branch.parent is not None:  # a path: its own closing tokens move one position on
        extra = closers(branch) + (token == tags.path_open) - (token == tags.path_close)
    return branch.state.position + 1 + extra + branch.owed


def fork_reach(branch: Branch, goal_position: int, prefix_lengths: list[int]) -> int:
    """Reach + owed of the children of a fork at `goal_position` once their forced prefixes are placed."""
    return goal_position + max(prefix_lengths) + 1 + branch.owed + closers(branch)


def no_room(branch: Branch, cap: int) -> bool:
    """A running branch that could not place one more token (text) within the cap."""
    return branch.status is Status.RUNNING and branch.state.position + 1 + closers(branch) + branch.owed > cap


def position_cap(prompt_position: int, max_critical_tokens: int | None, max_positions: int | None) -> tuple[int, str]:
    """The largest position a request's final ids may hold, and the finish reason when it binds: the critical
    budget ("critical_length") or the model's context ("length", as vLLM and OpenAI report it)."""
    critical = UNLIMITED if max_critical_tokens is None else prompt_position + max_critical_tokens
    context = UNLIMITED if max_positions is None else max_positions - 1
    return (critical, "critical_length") if critical <= context else (context, "length")
