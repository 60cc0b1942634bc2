"""Tree -> text: the canonical form (SPEC §2) and the sequential twin (SPEC §8).

Canonical form: no tokens between </Goal> and the first <Path>, between sibling paths, or between the last
</Path> and <Conclusion>; <Parallel> is followed directly by <Goal>; labels are "1", "2", ... at the top level
and "<parent>.k" inside a path; outlines and paths read "<Tag>LABEL: text".
"""
from __future__ import annotations

from typing import Iterable

from multiverse.structure.parser import parse
from multiverse.structure.tree import Block, Document, Node, Path, Text, Think


def serialise(doc: Document) -> str:
    return "".join(_node(n) for n in doc.children)


def _node(node: Node) -> str:
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Think):
        return "<Think>" + "".join(_node(c) for c in node.children) + "</Think>"
    return _block(node)


def _block(block: Block) -> str:
    goal = block.goal
    out = ["<Parallel><Goal>", goal.text.strip()]
    out += [f"<Outline>{o.label}: {o.text.strip()}</Outline>" for o in goal.outlines]
    out.append("</Goal>")
    out += [_path(p) for p in block.paths]
    out.append(f"<Conclusion>{block.conclusion.text.strip()}</Conclusion></Parallel>")
    return "".join(out)


def _path(path: Path) -> str:
    return f"<Path>{path.label}: {_path_body(path)}</Path>"


def _path_body(path: Path) -> str:
    """The path's content with leading and trailing whitespace removed."""
    return "".join(_node(c) for c in path.children).strip()


def relabel(doc: Document) -> Document:
    """Give every block the canonical labels: 1, 2, ... at the top level, <parent>.k inside a path."""
    for node in doc.children:
        _relabel_node(node, "")
    return doc


def _relabel_node(node: Node, parent: str) -> None:
    if isinstance(node, Think):
        for c in node.children:
            _relabel_node(c, parent)
    elif isinstance(node, Block):
        for k, (outline, path) in enumerate(zip(node.goal.outlines, node.paths), start=1):
            label = f"{parent}.{k}" if parent else str(k)
            outline.label = path.label = label
            for c in path.children:
                _relabel_node(c, label)


def canonicalize(text: str) -> str:
    """The canonical form of a trace; idempotent. Raises StructureError on malformed input."""
    return serialise(relabel(parse(text)))


def sequential_twin(text: str) -> str:
    """Plain sequential text: goals and conclusions dropped, tags and path labels dropped, paths in order.

    Pieces that would touch without whitespace (text right before a block, consecutive paths) are joined
    with a newline so that no two words of different pieces fuse.
    """
    return _join(_twin(n) for n in parse(text).children)


def _twin(node: Node) -> str:
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Think):
        return _join(_twin(c) for c in node.children)
    return _join(_join(_twin(c) for c in p.children).strip() for p in node.paths)


def _join(pieces: Iterable[str]) -> str:
    out = ""
    for piece in pieces:
        if out and piece and not out[-1].isspace() and not piece[0].isspace():
            out += "\n"
        out += piece
    return out
