"""The text a client sees while a request streams, from the engine's incremental decoder.

`TextStream.feed(ids)` gets the newly stable ids (final merged order) and returns the text that may be sent
now: the engine's incremental decoding (`lm.codec`, O(new ids) per call) minus the tail that could still
become a stop string (`Request.holdback`). `finish(final)` returns the rest of the final, stop-cut text.
Invariant: everything sent is a prefix of the final text, so a stream never shows what the cut removes.
"""
from __future__ import annotations

from typing import Any


class TextStream:
    def __init__(self, codec: Any, holdback: int, special_tokens: bool) -> None:
        """`special_tokens`: keep every special token (raw text), else the clean text (structure tags kept)."""
        self.text = codec.incremental(clean=not special_tokens, holdback=holdback)

    def feed(self, ids: list[int]) -> str:
        return self.text.push(ids)

    def finish(self, final: str) -> str:
        return self.text.finish(final)
