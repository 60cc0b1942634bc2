"""Re-prefilling what the server evicted: the client's answer to a call the plugin refused.

The plugin never computes a token that needs the Multiverse mask causally: a call whose cached prefix lost a
merged block (and that block's children) is aborted with `multiverse merge failed: ...`. The client holds
every token, so it rebuilds: the children of the last complete block of the refused call's ids (each one's
visible ids: the prefix + path k, its `</Path>` included) are prefilled again as 1-token calls; then the
refused call goes out again and the plugin builds the merged block from the children's KV, as at the first
merge. A child that is refused in turn (its own prefix or path holds an evicted block: an earlier block, a
nested one) gets the same treatment one level up, so evicted blocks are rebuilt recursively, innermost first.
Nothing is sampled: every rebuilt token is one the client already holds, and the cache makes the KV exact.

`Rebuild` is one request's stack of levels: the top level's sequences go out together; a level is popped
when each of its sequences is cached again; a refusal pushes the refused sequence's children as a new top.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.sglang.plugin.request_layout import RequestLayout
from engine.sglang.plugin.structure import MergePlan, merge_plan
from multiverse.attention import StructureRules
from multiverse.tags import StructureVocab

Ids = tuple[int, ...]


def block_children(ids: Sequence[int], vocab: StructureVocab, rules: StructureRules) -> list[Ids] | str:
    """The visible ids of each path of the last complete block in `ids` (the block the plugin plans a merge
    for: the one ending at the last token that needs the mask), or why there is none. O(len(ids)), once per
    refusal."""
    ids = list(ids)
    lay = RequestLayout.of(ids, vocab, rules)
    masked = lay.first_masked(0)
    if masked is None:
        return "its ids hold no complete forked block, so no eviction explains the refusal"
    plan = merge_plan(ids, lay, masked, vocab)
    if not isinstance(plan, MergePlan):
        return plan
    return [tuple(plan.child(ids, k)) for k in range(len(plan.spans))]


@dataclass
class Rebuild:
    """One request's pending re-prefills; levels[-1] goes out first (innermost blocks are pushed last)."""

    levels: list[list[Ids]] = field(default_factory=list)
    inflight: set[Ids] = field(default_factory=set)
    refusals: int = 0  # refused calls since the request's own last call got through (bounded by the caller)
    sent: int = 0  # re-prefill calls sent
    recovering: bool = False  # from a refusal until a call of the request's own gets through

    @property
    def active(self) -> bool:
        return bool(self.levels)

    def push(self, children: list[Ids]) -> None:
        """A new top level: these sequences must be cached before the level below goes out again."""
        fresh = [c for c in dict.fromkeys(children) if c not in self.inflight]
        if fresh:
            self.levels.append(fresh)

    def due(self) -> list[Ids]:
        """The top level's sequences that are not in flight: what goes out now."""
        return [s for s in self.levels[-1] if s not in self.inflight] if self.levels else []

    def done(self, ids: Ids) -> None:
        """ids is cached again: drop it from its level, and every level left empty."""
        self.inflight.discard(ids)
        for level in self.levels:
            if ids in level:
                level.remove(ids)
        self.levels = [level for level in self.levels if level]


__all__ = ["Rebuild", "block_children"]
