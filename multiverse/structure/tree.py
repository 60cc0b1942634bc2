"""The structure tree of a Multiverse trace (SPEC §2).

Node kinds: Text (free text), Think (a <Think> span), Block (<Parallel>), with Goal, Outline, Path and
Conclusion inside a Block. A Path's children are Text and nested Block nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union


@dataclass
class Text:
    text: str


@dataclass
class Outline:
    label: str
    text: str


@dataclass
class Goal:
    text: str
    outlines: list[Outline] = field(default_factory=list)


@dataclass
class Path:
    label: str
    children: list["Node"] = field(default_factory=list)


@dataclass
class Conclusion:
    text: str


@dataclass
class Block:
    goal: Goal
    paths: list[Path]
    conclusion: Conclusion

    def blocks(self) -> Iterator["Block"]:
        """This block and every block nested inside its paths, depth first."""
        yield self
        for path in self.paths:
            for child in path.children:
                if isinstance(child, Block):
                    yield from child.blocks()

    def depth(self) -> int:
        """1 for a block with no nested blocks."""
        inner = [c.depth() for p in self.paths for c in p.children if isinstance(c, Block)]
        return 1 + max(inner, default=0)


@dataclass
class Think:
    children: list["Node"] = field(default_factory=list)
    closed: bool = True


Node = Union[Text, Think, Block]


@dataclass
class Document:
    children: list[Node] = field(default_factory=list)

    def blocks(self) -> Iterator[Block]:
        """Every block, outer ones first, in document order."""
        for node in _walk_top(self.children):
            yield from node.blocks()


def _walk_top(children: list[Node]) -> Iterator[Block]:
    for node in children:
        if isinstance(node, Block):
            yield node
        elif isinstance(node, Think):
            yield from _walk_top(node.children)
