"""The layout of a growing row, extended in O(new ids): the scan behind `layout()`, resumable and copyable.

A server that sees one sequence grow call by call (SGLang's radix cache, a client-driven decode) keeps a
`LayoutScan` per prefix and extends it by the new ids only. Invariant (tests/test_layout_resume.py): for any
split of a row into pieces, the positions and hidden ranges returned piece by piece are those of `layout()`
of the whole row; a `copy()` resumes independently of the original.
"""
from __future__ import annotations

from typing import Any

from multiverse.attention.layout import Range, Run, _Scanner
from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab

__all__ = ["LayoutScan", "Range", "Run"]


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
