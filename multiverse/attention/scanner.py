"""The token-level structure rules, one token at a time, shared by the trainer and the engine.

A BranchState follows ONE branch (the root sequence, or one path) through its own tokens and assigns each
its RoPE position (SPEC §4). It recognises the Map stage by tag ids alone and reports, at `</Goal>`, either a
Fork (labels of the outlines, the position g of `</Goal>`) or a Fallback with its reason (SPEC §6). Text
between tags is never decoded, except the few ids of an outline's label.

Invariants: position rises by exactly one per consumed token; a child forked at g starts at g+1;
`merged(m)` makes the next token (the forced <Conclusion>) land at m+1. A path is ended only by the
`</Path>` matching its own `<Path>`: paths of a block that fell back to sequential decoding nest inside it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from multiverse.structure.parser import LABEL_RE
from multiverse.tags import StructureVocab


@dataclass(frozen=True)
class StructureRules:
    """Limits that decide whether a block forks (the same rules for training layout and engine)."""

    parallel: bool = True  # False: never fork (the sequential baseline)
    max_paths: int | None = None  # more outlines than this: the block runs sequentially
    max_depth: int | None = None  # 1 = top-level blocks only; deeper blocks run sequentially


@dataclass(frozen=True)
class Fork:
    labels: tuple[str, ...]
    goal_position: int  # g: the position of </Goal>


@dataclass(frozen=True)
class Fallback:
    reason: str  # no_outlines | unlabelled_outline | duplicate_labels | too_many_paths | too_deep | disabled


@dataclass(frozen=True)
class PathEnd:
    position: int  # position of this path's </Path>


Event = Fork | Fallback | PathEnd


class Phase(enum.Enum):
    TEXT = 0
    OPENED = 1  # after <Parallel>, before <Goal>
    GOAL = 2
    OUTLINE = 3


@dataclass
class BranchState:
    vocab: StructureVocab
    rules: StructureRules = field(default_factory=StructureRules)
    depth: int = 0  # number of enclosing forked blocks
    position: int = -1  # position of the last consumed token
    in_path: bool = False  # a child branch: its </Path> ends it
    open_paths: int = 0  # <Path> tags opened and not closed in this branch (own + sequential fallback blocks)
    phase: Phase = Phase.TEXT
    outlines: list[list[int]] = field(default_factory=list)  # label+text ids of finished outlines

    def child(self, goal_position: int) -> "BranchState":
        """The state of a path forked at `</Goal>` position g: its first token lands at g+1."""
        return BranchState(self.vocab, self.rules, self.depth + 1, goal_position, in_path=True)

    def merged(self, max_path_end: int) -> None:
        """After a merge: the next consumed token (the forced <Conclusion>) gets position m+1."""
        self.position = max_path_end
        self.phase = Phase.TEXT

    def step(self, token: int) -> Event | None:
        """Consume one token of this branch; its position is `self.position` afterwards."""
        self.position += 1
        t = self.vocab.tags
        if token == t.path_open:
            self.open_paths += 1
        elif token == t.path_close:
            # Only the branch's own </Path> ends it; one closing a sequential (fallback) path does not.
            if self.in_path and self.open_paths <= 1:
                return PathEnd(self.position)
            self.open_paths = max(0, self.open_paths - 1)
        if token == t.parallel_open:
            self.phase, self.outlines = Phase.OPENED, []
        elif self.phase is Phase.OPENED:
            self._opened(token)
        elif self.phase is Phase.GOAL:
            return self._goal(token)
        elif self.phase is Phase.OUTLINE:
            self._outline(token)
        return None

    def consume_text(self, run: list[int]) -> None:
        """Exactly `step` on each id of a run of NON-tag ids (which never raise events), in O(1) Python calls."""
        self.position += len(run)
        if self.phase is Phase.OUTLINE:
            self.outlines[-1].extend(run)

    # ---------------------------------------------------------------- Map stage
    def _is_tag(self, token: int) -> bool:
        return token in self.vocab.tags.id_set

    def _opened(self, token: int) -> None:
        if token == self.vocab.tags.goal_open:
            self.phase = Phase.GOAL
        elif self._is_tag(token):
            self.phase = Phase.TEXT

    def _goal(self, token: int) -> Event | None:
        t = self.vocab.tags
        if token == t.outline_open:
            self.phase = Phase.OUTLINE
            self.outlines.append([])
        elif token == t.goal_close:
            self.phase = Phase.TEXT
            return self._decide()
        elif self._is_tag(token):
            self.phase = Phase.TEXT
        return None

    def _outline(self, token: int) -> None:
        if token == self.vocab.tags.outline_close:
            self.phase = Phase.GOAL
        elif self._is_tag(token):
            self.phase = Phase.TEXT
        else:
            self.outlines[-1].append(token)

    def _decide(self) -> Event:
        labels = [read_label(ids, self.vocab) for ids in self.outlines]
        if not self.rules.parallel:
            return Fallback("disabled")
        if not labels:
            return Fallback("no_outlines")
        if any(label is None for label in labels):
            return Fallback("unlabelled_outline")
        if len(set(labels)) != len(labels):
            return Fallback("duplicate_labels")
        if self.rules.max_paths is not None and len(labels) > self.rules.max_paths:
            return Fallback("too_many_paths")
        if self.rules.max_depth is not None and self.depth + 1 > self.rules.max_depth:
            return Fallback("too_deep")
        return Fork(tuple(label for label in labels if label is not None), self.position)


def read_label(outline_ids: list[int], vocab: StructureVocab) -> str | None:
    """The label of an outline from its ids ("1.2: ..." -> "1.2"); None when it has none."""
    if not outline_ids:
        return None
    m = LABEL_RE.match(vocab.decode(outline_ids[:16]))
    return m.group(1) if m else None
