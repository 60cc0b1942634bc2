"""structure="constrained": a per-branch automaton that masks every token which would break the structure.

Hand-written on the core's tag ids (not a grammar library): the engine already splits a trace into branches,
so each branch needs only the automaton of its own tokens, and labels are data (path i must carry outline i's
label), which a per-branch state expresses directly. The rules follow SPEC §2 and §6:

    root text    : text, <Think> once, </Think> after it, <Parallel> (if a block may fork here), EOS (not
                   inside <Think>); every other tag is masked
    path text    : text, </Path>, nested <Parallel> (if it may fork), EOS (the engine closes the path)
    <Parallel>   : then <Goal> only
    goal         : text before the first outline, <Outline> (at most max_paths), </Goal> (after >= 1 outline)
    outline      : its label "K:" forced token by token (K = the next label: "1", "2" at the top, "1.1" ...
                   inside path "1"), then text, </Outline>
    after </Goal>: the branch waits for its paths; the engine forces <Conclusion> at the merge
    conclusion   : text, </Conclusion>; then </Parallel> only

So no close tag without its opener, no <Path> outside a forked block, no path without its outline's label, no
<Conclusion> before the paths, no nesting past max_depth and no block the engine would run sequentially
(SPEC §6 fallbacks cannot happen). Only a budget can still cut a structure short (the engine closes paths).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab


class Phase(enum.Enum):
    TEXT = 0
    OPENED = 1  # after <Parallel>: <Goal> next
    GOAL = 2
    LABEL = 3  # inside <Outline>, writing its forced label
    OUTLINE = 4
    WAIT = 5  # after </Goal>: the paths decode; <Conclusion> comes forced at the merge
    CONCLUSION = 6
    CLOSE = 7  # after </Conclusion>: </Parallel> next


@dataclass
class StructureGuard:
    vocab: StructureVocab
    rules: StructureRules
    eos_ids: frozenset[int]
    label: str = ""  # this branch's path label ("" for the root)
    depth: int = 0  # enclosing forked blocks
    phase: Phase = Phase.TEXT
    think: int = 0  # root: 0 before <Think>, 1 inside, 2 after </Think>
    outlines: int = 0
    forced: list[int] = field(default_factory=list)  # label ids still to write in LABEL

    def child(self, label: str) -> "StructureGuard":
        """The guard of path `label` forked from this branch (it then reads its forced <Path> LABEL ":")."""
        return StructureGuard(self.vocab, self.rules, self.eos_ids, label, self.depth + 1, Phase.WAIT, think=2)

    # ---------------------------------------------------------------- what may come next
    def allowed(self) -> tuple[list[int] | None, list[int]]:
        """(the only ids allowed next, or None; else the ids masked). A one-id list is a forced token."""
        t = self.vocab.tags
        every = list(t.all())
        if self.phase is Phase.LABEL:
            return self.forced[:1], []
        if self.phase is Phase.OPENED:
            return [t.goal_open], []
        if self.phase is Phase.CLOSE:
            return [t.parallel_close], []
        if self.phase is Phase.GOAL:
            keep = ([t.outline_open] if self._may_outline() else []) + ([t.goal_close] if self.outlines else [])
            if self.outlines:  # no text between outlines: a tag must come
                return keep, []
            return None, [x for x in every if x not in keep] + list(self.eos_ids)
        if self.phase is Phase.OUTLINE:
            return None, [x for x in every if x != t.outline_close] + list(self.eos_ids)
        if self.phase is Phase.CONCLUSION:
            return None, [x for x in every if x != t.conclusion_close] + list(self.eos_ids)
        if self.phase is Phase.WAIT:  # a path before its forced prefix: never samples
            return None, []
        keep = [t.parallel_open] if self._may_fork() else []
        if self.label:
            keep.append(t.path_close)
        elif self.think == 0:
            keep.append(t.think_open)
        elif self.think == 1:
            keep.append(t.think_close)
        banned = [x for x in every if x not in keep]
        return None, banned + (list(self.eos_ids) if not self.label and self.think == 1 else [])

    def closers(self) -> list[int]:
        """Forced tags that end the block this branch is in when a budget cuts it. After the paths (goal
        complete): the merge's conclusion and `</Parallel>`. In the Map stage (no path forked yet): the rest of
        the open outline's label, `</Outline></Goal>`, an empty `<Path>K:</Path>` per outline, then the conclusion,
        so the cut block stays well formed (every one of these tokens is forced, none sampled)."""
        t = self.vocab.tags
        tail = [t.conclusion_open, t.conclusion_close, t.parallel_close]
        if self.phase is Phase.WAIT:
            return tail
        if self.phase is Phase.CONCLUSION:
            return tail[1:]
        if self.phase is Phase.CLOSE:
            return tail[2:]
        if self.phase not in (Phase.OPENED, Phase.GOAL, Phase.LABEL, Phase.OUTLINE):
            return []
        out = [t.goal_open] if self.phase is Phase.OPENED else []
        count = self.outlines
        if self.phase is Phase.LABEL:
            out += self.forced + [t.outline_close]
        elif self.phase is Phase.OUTLINE:
            out.append(t.outline_close)
        elif count == 0:  # a goal needs an outline: an empty one with its label
            count = 1
            out += [t.outline_open] + self.vocab.encode(f"{self._name(1)}:") + [t.outline_close]
        out.append(t.goal_close)
        for k in range(1, count + 1):
            out += [t.path_open] + self.vocab.encode(f"{self._name(k)}:") + [t.path_close]
        return out + tail

    def _name(self, k: int) -> str:
        return f"{self.label}.{k}" if self.label else str(k)

    def _may_fork(self) -> bool:
        r = self.rules
        return r.parallel and (r.max_depth is None or self.depth + 1 <= r.max_depth)

    def _may_outline(self) -> bool:
        return self.rules.max_paths is None or self.outlines < self.rules.max_paths

    # ---------------------------------------------------------------- reading a token
    def step(self, token: int) -> None:
        """Follow one token of this branch (prompt, sampled or forced). A tag out of place (only a prompt can hold
        one: generated tokens obey `allowed`) changes nothing, so a stray tag in a prompt never unlocks anything."""
        t = self.vocab.tags
        phase = self.phase
        if phase is Phase.LABEL:
            self.forced.pop(0)
            if not self.forced:
                self.phase = Phase.OUTLINE
        elif token == t.parallel_open and phase is Phase.TEXT:
            self.phase, self.outlines = Phase.OPENED, 0
        elif token == t.goal_open and phase is Phase.OPENED:
            self.phase = Phase.GOAL
        elif token == t.outline_open and phase is Phase.GOAL:
            self.outlines += 1
            self.forced = self.vocab.encode(f"{self._name(self.outlines)}:")
            self.phase = Phase.LABEL
        elif token == t.outline_close and phase is Phase.OUTLINE:
            self.phase = Phase.GOAL
        elif token == t.goal_close and phase is Phase.GOAL:
            self.phase = Phase.WAIT
        elif token == t.conclusion_open and phase is Phase.WAIT:
            self.phase = Phase.CONCLUSION
        elif token == t.conclusion_close and phase is Phase.CONCLUSION:
            self.phase = Phase.CLOSE
        elif (token == t.parallel_close and phase is Phase.CLOSE) or (token == t.path_open and phase is Phase.WAIT):
            self.phase = Phase.TEXT  # a block ended, or a path read its own <Path>
        elif token == t.think_open and phase is Phase.TEXT:
            self.think = max(self.think, 1)
        elif token == t.think_close and phase is Phase.TEXT:
            self.think = 2
        elif phase is Phase.OPENED:  # anything but <Goal> after <Parallel> (a prompt may hold it): not a block
            self.phase = Phase.TEXT


def apply(work: torch.Tensor, guards: list[StructureGuard | None]) -> torch.Tensor:
    """work [S, V] with each constrained row's masked ids at -inf (in place; the caller passes its own copy)."""
    for r, guard in enumerate(guards):
        if guard is None:
            continue
        only, banned = guard.allowed()
        if only is not None:
            keep = work[r, only].clone()
            work[r] = float("-inf")
            # an allowed id another processor masked still gets a chance: the structure must go on
            work[r, only] = torch.where(torch.isfinite(keep), keep, torch.zeros_like(keep))
        elif banned:
            work[r, banned] = float("-inf")
    return work
