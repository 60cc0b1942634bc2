"""Streaming text: incremental detokenisation and the hold-back that keeps stop strings out of the stream.

`IncrementalDetokenizer.add(ids)` decodes only a short window per call (the ids since the last emitted piece
plus the ids before them as context), never the whole text: O(new tokens) per step. A window whose text ends
in an incomplete UTF-8 sequence (U+FFFD) waits for the next ids.

`StopHoldback` keeps back the end of the text that could still become a stop string, so a client never sees
characters that the final, stop-truncated text does not contain.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] were decoded already: context for the next window
        self.read = 0
        self.text = ""  # everything decoded so far

    def add(self, ids: Sequence[int]) -> str:
        """Append ids; returns the text they complete (may be "" while a multi-byte piece is pending)."""
        self.ids.extend(ids)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        piece = after[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        self.text += piece
        return piece

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip) if ids else ""


class StopHoldback:
    """How much of a growing text may be sent: all but a tail that is a prefix of some stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)

    def releasable(self, text: str) -> int:
        """Length of the prefix of `text` that can no longer turn into (part of) a stop string."""
        if not self.stops:
            return len(text)
        for keep in range(min(self.longest, len(text)), 0, -1):  # longest suspicious tail first
            tail = text[-keep:]
            if any(s.startswith(tail) for s in self.stops):
                return len(text) - keep
        return len(text)
