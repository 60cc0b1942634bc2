"""Split text into structure tags and the text between them.

Only the twelve exact tags are tags; any other '<' (as in 'a < b') is text, so traces with bare
mathematics lex fine where a strict XML parser fails.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from multiverse.tags import TAG_NAMES

_TAG_RE = re.compile(r"<(/?)(" + "|".join(TAG_NAMES) + r")>")


@dataclass(frozen=True)
class Lexeme:
    kind: str  # "text" | "open" | "close"
    value: str  # the text, or the tag name without brackets (e.g. "Path")
    offset: int  # character offset of the lexeme in the source

    @property
    def is_space(self) -> bool:
        return self.kind == "text" and not self.value.strip()

    def show(self) -> str:
        if self.kind == "text":
            return "text"
        return f"<{'/' if self.kind == 'close' else ''}{self.value}>"


def lex(text: str) -> list[Lexeme]:
    out: list[Lexeme] = []
    pos = 0
    for m in _TAG_RE.finditer(text):
        if m.start() > pos:
            out.append(Lexeme("text", text[pos : m.start()], pos))
        out.append(Lexeme("close" if m.group(1) else "open", m.group(2), m.start()))
        pos = m.end()
    if pos < len(text):
        out.append(Lexeme("text", text[pos:], pos))
    return out
