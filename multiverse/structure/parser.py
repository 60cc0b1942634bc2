"""Recursive-descent parser: text (canonical or reference format) -> Document tree (SPEC §2).

Accepted beyond canonical form: whitespace between sibling tags, a <Think> wrapper, and the reference's
legacy goals whose outlines are plain lines "Path: description" (labels are then assigned per SPEC).
Every grammar violation raises StructureError with the rule and its line/column; nothing else escapes.
"""
from __future__ import annotations

import re

from multiverse.structure.errors import StructureError, line_col
from multiverse.structure.lexer import Lexeme, lex
from multiverse.structure.tree import Block, Conclusion, Document, Goal, Node, Outline, Path, Text, Think

LABEL_RE = re.compile(r"\s*([0-9A-Za-z][0-9A-Za-z._-]{0,15})\s*:", re.DOTALL)
_LEGACY_LINE_RE = re.compile(r"^\s*(?:Path|Outline)\s*[0-9.]*\s*:\s*(.*\S)\s*$", re.MULTILINE)


def parse(text: str) -> Document:
    """Parse a trace into a Document. Raises StructureError (only) on malformed structure."""
    if not isinstance(text, str):
        raise StructureError(f"expected a str, got {type(text).__name__}")
    return _Parser(text).document()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lexemes = lex(text)
        self.i = 0

    # ---------------------------------------------------------------- cursor
    def peek(self) -> Lexeme | None:
        return self.lexemes[self.i] if self.i < len(self.lexemes) else None

    def take(self) -> Lexeme:
        lx = self.lexemes[self.i]
        self.i += 1
        return lx

    def error(self, rule: str, lx: Lexeme | None) -> StructureError:
        return StructureError.at(rule, self.text, len(self.text) if lx is None else lx.offset)

    def line_of(self, lx: Lexeme) -> int:
        return line_col(self.text, lx.offset)[0]

    def skip_space(self, between: str) -> None:
        """Skip whitespace-only text; other text here breaks the grammar."""
        lx = self.peek()
        if lx is not None and lx.kind == "text":
            if not lx.is_space:
                raise self.error(f"text between {between}", lx)
            self.i += 1

    def expect_close(self, name: str, opened: Lexeme) -> None:
        lx = self.peek()
        if lx is None:
            raise self.error(f"unclosed <{name}> opened at line {self.line_of(opened)}", None)
        if not (lx.kind == "close" and lx.value == name):
            raise self.error(f"expected </{name}> (opened at line {self.line_of(opened)}), found {lx.show()}", lx)
        self.i += 1

    # ---------------------------------------------------------------- free text contexts
    def document(self) -> Document:
        children = self.content(closer=None, opened=None)
        return Document(children)

    def content(self, closer: str | None, opened: Lexeme | None) -> list[Node]:
        """Text, <Think> and blocks until </closer> (not consumed) or the end when closer is None."""
        nodes: list[Node] = []
        while True:
            lx = self.peek()
            if lx is None:
                if closer is None:
                    return nodes
                assert opened is not None
                raise self.error(f"unclosed <{closer}> opened at line {self.line_of(opened)}", None)
            if lx.kind == "text":
                nodes.append(Text(self.take().value))
            elif lx.kind == "close" and lx.value == closer:
                return nodes
            elif lx.kind == "open" and lx.value == "Parallel":
                nodes.append(self.block())
            elif lx.kind == "open" and lx.value == "Think":
                if closer is not None:
                    raise self.error("<Think> is allowed only at the top level", lx)
                nodes.append(self.think())
            elif closer in ("Path", "Think") and lx.kind in ("open", "close"):
                assert opened is not None
                raise self.error(f"unclosed <{closer}> opened at line {self.line_of(opened)}, found {lx.show()}", lx)
            elif lx.kind == "open" and lx.value == "Conclusion":
                raise self.error("<Conclusion> before any <Path>", lx)
            elif lx.kind == "open":
                raise self.error(f"<{lx.value}> outside a <Parallel> block", lx)
            else:
                raise self.error(f"unexpected {lx.show()}", lx)

    def think(self) -> Think:
        opened = self.take()
        children = self.content(closer="Think", opened=opened)
        self.expect_close("Think", opened)
        return Think(children)

    # ---------------------------------------------------------------- blocks
    def block(self) -> Block:
        opened = self.take()
        self.skip_space("<Parallel> and <Goal>")
        lx = self.peek()
        if lx is None:
            raise self.error(f"unclosed <Parallel> opened at line {self.line_of(opened)}", None)
        if lx.kind == "open" and lx.value == "Conclusion":
            raise self.error("<Conclusion> before any <Path>", lx)
        if not (lx.kind == "open" and lx.value == "Goal"):
            raise self.error(f"<Parallel> must begin with <Goal>, found {lx.show()}", lx)
        goal, legacy = self.goal()
        paths = self.paths(goal, legacy, opened)
        conclusion = self.conclusion(opened)
        self.skip_space("</Conclusion> and </Parallel>")
        self.expect_close("Parallel", opened)
        return Block(goal, paths, conclusion)

    def goal(self) -> tuple[Goal, bool]:
        opened = self.take()
        parts: list[str] = []
        outlines: list[Outline] = []
        while True:
            lx = self.peek()
            if lx is None:
                raise self.error(f"unclosed <Goal> opened at line {self.line_of(opened)}", None)
            if lx.kind == "text":
                parts.append(self.take().value)
            elif lx.kind == "open" and lx.value == "Outline":
                outlines.append(self.outline(len(outlines) + 1))
            elif lx.kind == "close" and lx.value == "Goal":
                self.i += 1
                break
            else:
                raise self.error(f"{lx.show()} inside <Goal>", lx)
        text = "".join(parts)
        if outlines:
            return Goal(text.strip(), outlines), False
        legacy = [m.group(1) for m in _LEGACY_LINE_RE.finditer(text)]
        if not legacy:
            raise self.error("<Goal> has no <Outline>", opened)
        rest = _LEGACY_LINE_RE.sub("", text).strip()
        return Goal(rest, [Outline(str(k + 1), d) for k, d in enumerate(legacy)]), True

    def outline(self, index: int) -> Outline:
        opened = self.take()
        lx = self.peek()
        body = ""
        if lx is not None and lx.kind == "text":
            body = self.take().value
        self.expect_close("Outline", opened)
        m = LABEL_RE.match(body)
        if m is None:
            raise self.error(f"outline {index} has no label (expected e.g. '{index}: ...')", opened)
        return Outline(m.group(1), body[m.end() :].strip())

    def paths(self, goal: Goal, legacy: bool, opened_block: Lexeme) -> list[Path]:
        paths: list[Path] = []
        while True:
            self.skip_space("</Goal> and <Path>" if not paths else "</Path> and <Path>")
            lx = self.peek()
            if lx is None:
                raise self.error(f"unclosed <Parallel> opened at line {self.line_of(opened_block)}", None)
            if not (lx.kind == "open" and lx.value == "Path"):
                break
            paths.append(self.path(len(paths) + 1, goal, legacy))
        if not paths:
            if lx.kind == "open" and lx.value == "Conclusion":
                raise self.error("<Conclusion> before any <Path>", lx)
            raise self.error(f"expected <Path> after </Goal>, found {lx.show()}", lx)
        if len(paths) < len(goal.outlines):
            raise self.error(f"outline {len(paths) + 1} has no matching path", lx)
        return paths

    def path(self, index: int, goal: Goal, legacy: bool) -> Path:
        opened = self.take()
        if index > len(goal.outlines):
            raise self.error(f"path {index} has no matching outline", opened)
        children = self.content(closer="Path", opened=opened)
        self.expect_close("Path", opened)
        expected = goal.outlines[index - 1].label
        first = children[0] if children else None
        m = LABEL_RE.match(first.text) if isinstance(first, Text) else None
        if m is None:
            if not legacy:
                raise self.error(f"path {index} has no label (expected '{expected}: ...')", opened)
            return Path(expected, children)
        label = m.group(1)
        if label != expected and not legacy:
            raise self.error(f"path {index} is labelled '{label}' but outline {index} is labelled '{expected}'", opened)
        assert isinstance(first, Text)
        rest = first.text[m.end() :]
        return Path(expected, ([Text(rest)] if rest else []) + children[1:])

    def conclusion(self, opened_block: Lexeme) -> Conclusion:
        lx = self.peek()
        if lx is None:
            raise self.error(f"unclosed <Parallel> opened at line {self.line_of(opened_block)}", None)
        if not (lx.kind == "open" and lx.value == "Conclusion"):
            raise self.error(f"expected <Conclusion> after the last </Path>, found {lx.show()}", lx)
        opened = self.take()
        parts: list[str] = []
        while (lx := self.peek()) is not None and lx.kind == "text":
            parts.append(self.take().value)
        self.expect_close("Conclusion", opened)
        return Conclusion("".join(parts))
