"""The layout of a growing row, extended in O(new ids): the scan behind `layout()`, resumable and copyable.

A server that sees one sequence grow call by call (SGLang's radix cache, a client-driven decode) keeps a
`LayoutScan` per prefix and extends it by the new ids only. Invariant (tests/test_layout_resume.py): for any
split of a row into pieces, the positions and hidden ranges returned piece by piece are those of `layout()`
of the whole row; a `copy()` resumes independently of the original.

A block's paths are scanned independently of one another (each starts from its parent's state at `</Goal>`),
so the state after a block's last `</Path>` in merged order is the state after path 1, with the other paths'
ends added: `merge_children` builds it from the scans of the children's own sequences (prefix + path k) in
O(depth), where scanning the merged row would cost O(paths 2..n).
"""
from __future__ import annotations

from typing import Any

from collections.abc import Sequence

from multiverse.attention.layout import Range, Run, _Block, _Scanner
from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab

__all__ = ["LayoutScan", "Range", "Run", "merge_children"]


class LayoutScan:
    """One document's scan state after `length` tokens (non-strict, like `layout()` by default)."""

    def __init__(self, tokenizer: Any, rules: StructureRules | None = None) -> None:
        vocab = tokenizer if isinstance(tokenizer, StructureVocab) else StructureVocab.from_tokenizer(tokenizer)
        self._scanner = _Scanner(vocab, rules or StructureRules(), strict=False)

    @property
    def length(self) -> int:
        return self._scanner.length

    @property
    def rules(self) -> StructureRules:
        return self._scanner.rules

    @property
    def last_hidden(self) -> tuple[Range, ...]:
        """Hidden ranges of the last token scanned (() before any)."""
        return self._scanner.last_hidden

    def extend(self, ids: list[int]) -> tuple[list[int], list[Run]]:
        """Positions [n] of the next n tokens and their runs (a, b, hidden ranges) in row indices.

        A token needs the Multiverse mask iff its hidden-range tuple is non-empty (every range is non-empty).
        """
        positions, runs = self._scanner.feed(ids)
        # what layout() reports on the whole row (fallbacks, forced tokens) is not kept: a state stays O(depth)
        self._scanner.fallbacks.clear()
        self._scanner.path_opens.clear()
        self._scanner.merges.clear()
        return positions, runs

    def copy(self) -> "LayoutScan":
        new = object.__new__(LayoutScan)
        new._scanner = self._scanner.copy()
        return new

    def open_block(self) -> tuple[int, int, int] | None:
        """(index of its first <Path>, paths it has, paths finished) of the innermost open block whose paths
        are all closed so far (the state right after a </Path>), else None."""
        top = self._scanner.stack[-1] if self._scanner.stack else None
        if not isinstance(top, _Block):
            return None
        return top.first_path, len(top.labels), len(top.path_ends)


def merge_children(first: LayoutScan, others: Sequence[LayoutScan], starts: Sequence[int], end: int) -> LayoutScan | None:
    """The scan after prefix + path 1 + ... + path n (n = 1 + len(others)), from the children's own scans.

    first: the scan of prefix + path 1 (the merged row's own first tokens); others[k]: of prefix + path k+2, as
    its own sequence; starts[k]: row index of path k+2's <Path> in the merged row; end: the row length there (the
    last </Path> + 1). None unless every scan ends right after the </Path> of one path of the same block, with
    n paths in all (the caller then scans). Every token of path k has the same position and state transitions in
    both rows (a path starts from its parent's state at </Goal>); only its hidden ranges differ, and the state
    keeps those of the last token alone. What layout() reports on the whole row (num_forks) is not kept.
    """
    head = first.open_block()
    if head is None or head[2] != 1 or head[1] != 1 + len(others) or len(starts) != len(others) or not others:
        return None
    block = first._scanner.stack[-1]
    ends = []
    for other in others:
        top = other._scanner.stack[-1] if other._scanner.stack else None
        if (not isinstance(top, _Block) or len(top.path_ends) != 1 or len(other._scanner.stack) != len(first._scanner.stack)
                or (top.first_path, top.labels, top.goal_position) != (block.first_path, block.labels, block.goal_position)):
            return None
        ends += top.path_ends
    merged = first.copy()
    scan = merged._scanner
    top = scan.stack[-1]
    assert isinstance(top, _Block)
    top.path_ends += ends
    scan.length = end
    scan.last_hidden = top.parent.hidden + ((top.first_path, starts[-1]),)
    return merged
