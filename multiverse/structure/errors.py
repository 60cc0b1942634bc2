"""StructureError: the one exception raised for malformed Multiverse structure."""
from __future__ import annotations


class StructureError(ValueError):
    """A grammar rule was broken. Carries where: text offset/line/column, or a token index."""

    def __init__(
        self,
        rule: str,
        *,
        offset: int | None = None,
        line: int | None = None,
        column: int | None = None,
        token_index: int | None = None,
    ) -> None:
        self.rule = rule
        self.offset = offset
        self.line = line
        self.column = column
        self.token_index = token_index
        super().__init__(f"{self.where()}: {rule}" if self.where() else rule)

    def where(self) -> str:
        if self.token_index is not None:
            return f"token {self.token_index}"
        if self.line is not None:
            return f"line {self.line}, column {self.column} (offset {self.offset})"
        return ""

    @classmethod
    def at(cls, rule: str, text: str, offset: int) -> "StructureError":
        """An error at a character offset of `text`; line and column are 1-based."""
        line, column = line_col(text, offset)
        return cls(rule, offset=offset, line=line, column=column)


def line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column
