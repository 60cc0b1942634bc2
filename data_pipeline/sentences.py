"""Lossless sentence splitting: the unit that steps own and that the refill stage puts back.

Invariant: "".join(split_sentences(text)) == text. Each piece carries its trailing whitespace, so the
refill is exact and no character of the original can be lost by the grouping itself.
"""
from __future__ import annotations

import re

# A break after sentence-ending punctuation followed by whitespace, or after a run of newlines.
_BREAK = re.compile(r"(?<=[.!?])[ \t]+(?=\S)|\n+")
_MIN_CHARS = 3  # pieces with fewer non-space characters are glued to their predecessor


def split_sentences(text: str) -> list[str]:
    """Pieces of `text` in order; joining them gives back `text` exactly."""
    pieces: list[str] = []
    start = 0
    for m in _BREAK.finditer(text):
        end = m.end()
        if end > start:
            _push(pieces, text[start:end])
            start = end
    if start < len(text):
        _push(pieces, text[start:])
    return pieces


def _push(pieces: list[str], piece: str) -> None:
    if pieces and len(piece.strip()) < _MIN_CHARS:
        pieces[-1] += piece
    else:
        pieces.append(piece)


def numbered(sentences: list[str], first: int = 0, last: int | None = None) -> str:
    """Lines "[k] sentence" (1-based k) for sentences[first:last], newlines inside shown as spaces."""
    stop = len(sentences) if last is None else last
    return "\n".join(f"[{k + 1}] {' '.join(sentences[k].split())}" for k in range(first, stop))
