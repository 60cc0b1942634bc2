"""One output's branch tree as HTML: each block's paths side by side, the critical path highlighted.

The critical path runs through every top-level block and, in each block it crosses, through its longest path
(SPEC §4: the paths of a block share positions, so the conclusion waits for the longest); inside that path it
crosses the nested blocks the same way. A path's length is its own tokens plus the critical length of the blocks
nested in it. Text that does not parse (a cut or malformed structure) is shown as text with the parser's error.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from multiverse.structure import StructureError, parse
from multiverse.structure.tree import Block, Path, Text, Think
from multiverse.tags import TAGS



@dataclass(frozen=True)
class Ruler:
    measure: Callable[[str], int]  # the length of a text: tokens, or characters when no tokenizer is at hand
    unit: str = "tokens"



def strip_specials(raw: str, specials: Sequence[str]) -> str:
    for token in specials:
        if token not in TAGS:
            raw = raw.replace(token, "")
    return raw


def render(raw: str, specials: Sequence[str], ruler: Ruler) -> str:
    """HTML of the whole output: text, <Think> spans and blocks in order."""
    text = strip_specials(raw, specials)
    try:
        doc = parse(text)
    except StructureError as err:
        return f'<div class="invalid">structure not valid: {escape(str(err))}</div><pre class="text">{escape(text)}</pre>'
    return _nodes(doc.children, ruler, on_critical=True)


def _nodes(nodes: Sequence[object], ruler: Ruler, on_critical: bool) -> str:
    out = []
    for node in nodes:
        if isinstance(node, Text):
            if node.text.strip():
                out.append(f'<pre class="text">{escape(node.text.strip())}</pre>')
        elif isinstance(node, Think):
            out.append(f'<div class="think"><span class="tag">Think</span>{_nodes(node.children, ruler, on_critical)}</div>')
        elif isinstance(node, Block):
            out.append(_block(node, ruler, on_critical))
    return "".join(out)


def block_length(block: Block, ruler: Ruler) -> int:
    m = ruler.measure
    goal = m(block.goal.text) + sum(m(o.text) for o in block.goal.outlines)
    return goal + max((path_length(p, ruler) for p in block.paths), default=0) + m(block.conclusion.text)


def path_length(path: Path, ruler: Ruler) -> int:
    return sum(block_length(c, ruler) if isinstance(c, Block) else ruler.measure(getattr(c, "text", ""))
               for c in path.children)


def _block(block: Block, ruler: Ruler, on_critical: bool) -> str:
    lengths = [path_length(p, ruler) for p in block.paths]
    longest = lengths.index(max(lengths)) if lengths else -1
    outlines = "".join(f"<li><b>{escape(o.label)}:</b> {escape(o.text)}</li>" for o in block.goal.outlines)
    goal = escape(block.goal.text.strip())
    paths = []
    for i, (path, n) in enumerate(zip(block.paths, lengths)):
        critical = on_critical and i == longest
        cls = "path critical" if critical else "path"
        mark = " · critical path" if critical else ""
        body = _nodes(path.children, ruler, critical)
        paths.append(f'<div class="{cls}"><div class="head">Path {escape(path.label)} · {n} {ruler.unit}{mark}</div>{body}</div>')
    conclusion = escape(block.conclusion.text.strip())
    return (f'<div class="block"><div class="goal"><span class="tag">Goal</span> {goal}<ul>{outlines}</ul></div>'
            f'<div class="paths">{"".join(paths)}</div>'
            f'<div class="conclusion"><span class="tag">Conclusion</span> {conclusion}</div></div>')
