"""The layout of one request's ids, resumed from a stored scan state and extended by new ids only.

A request's layout covers tokens [start, end) of its ids: `start` is where the scan state it resumed from
ended (0 for a fresh scan), so a call costs O(end - start), the tokens not yet scanned for this prefix. The
layout is a function of the ids alone (never of the cache), so it stays valid while the tree changes.
Pure Python, no SGLang import: tested and benchmarked without a server.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from multiverse.attention import LayoutScan, StructureRules
from multiverse.attention.resume import Range, Run
from multiverse.tags import StructureVocab

LAYOUT = "_multiverse_layout"  # attribute on sglang's Req: its RequestLayout (cache.py makes it, positions.py reads it)


class RequestLayout:
    def __init__(self, state: LayoutScan) -> None:
        self.start = state.length
        self.before = state.last_hidden  # hidden ranges of token start - 1
        self.scan = state  # the state after token end - 1 (owned: extended in place)
        self.positions: list[int] = []  # [end - start] positions of tokens start..end-1
        self.runs: list[Run] = []  # (a, b, hidden ranges) covering [start, end), neighbours merged
        self.run_starts: list[int] = []  # a of each run, for bisect
        self.saved: dict[int, LayoutScan] = {}  # states at chosen lengths, for the radix tree
        self.plan: Any = None  # a merge request laid out from its children's states: its MergePlan (structure.py)

    @classmethod
    def of(cls, ids: Sequence[int], vocab: StructureVocab, rules: StructureRules | None = None) -> "RequestLayout":
        """A fresh scan of the whole of ids (start 0)."""
        lay = cls(LayoutScan(vocab, rules))
        lay.extend(ids)
        return lay

    @property
    def end(self) -> int:
        return self.scan.length

    @property
    def rules(self) -> StructureRules:
        return self.scan.rules

    def extend(self, ids: Sequence[int]) -> None:
        """Scan ids as tokens [end, end + len(ids))."""
        if not ids:
            return
        positions, runs = self.scan.extend(list(ids))
        self.positions += positions
        for a, b, hidden in runs:
            if self.runs and self.runs[-1][1] == a and self.runs[-1][2] == hidden:
                self.runs[-1] = (self.runs[-1][0], b, hidden)
            else:
                self.runs.append((a, b, hidden))
                self.run_starts.append(a)

    def save(self) -> LayoutScan:
        """Keep (and return) a copy of the state at the current end."""
        state = self.saved[self.end] = self.scan.copy()
        return state

    def state_at(self, n: int) -> LayoutScan | None:
        """The scan state after n tokens, if this layout ends there or saved it."""
        return self.scan.copy() if n == self.end else self.saved.get(n)

    def position_slice(self, a: int, b: int) -> list[int]:
        """Positions of tokens [a, b); requires start <= a <= b <= end."""
        assert self.start <= a <= b <= self.end, (self.start, a, b, self.end)
        return self.positions[a - self.start : b - self.start]

    def hidden_at(self, i: int) -> tuple[Range, ...]:
        return self.runs[bisect_right(self.run_starts, i) - 1][2]

    def first_masked(self, frm: int) -> int | None:
        """The last token at or after `frm` that has a hidden range (needs the Multiverse mask), else None.

        O(runs after frm). Tokens before `start` are not known here: requires frm >= start.
        """
        assert frm >= self.start, (frm, self.start)
        for a, b, hidden in reversed(self.runs):
            if b <= frm:
                return None
            if hidden:
                return b - 1
        return None


def request_ids(req: Any) -> list[int]:
    """The request's ids: its prompt (no copy) and what it has decoded."""
    return req.origin_input_ids + req.output_ids if req.output_ids else req.origin_input_ids


def ids_between(req: Any, a: int, b: int) -> list[int]:
    """request_ids(req)[a:b] without building the whole list."""
    return slice_ids(req.origin_input_ids, req.output_ids, a, b)


def slice_ids(prompt: list[int], out: list[int], a: int, b: int) -> list[int]:
    """(prompt + out)[a:b], copying only that slice."""
    p = len(prompt)
    if b <= p:
        return prompt[a:b]
    return prompt[a:] + out[: b - p] if a < p else out[a - p : b - p]
