"""The plan, the original sentences and the rewrite replies -> one canonical Multiverse trace.

Text outside rewritten sentences is the original, byte for byte; a rewritten sentence keeps the original's
trailing whitespace. Labels are placeholders here and made canonical by the core's `canonicalize`.
"""
from __future__ import annotations

from dataclasses import dataclass

from multiverse.structure import canonicalize

from data_pipeline.grouping import Block, Item, Sentences


@dataclass(frozen=True)
class BlockText:
    """The Map and Reduce text of one block, from the rewrite stage."""

    goal: str
    outlines: tuple[str, ...]
    conclusion: str


def render(items: tuple[Item, ...], sentences: list[str], rewrites: dict[int, str],
           texts: dict[str, BlockText], wrap_think: bool = True) -> str:
    """The canonical parallel trace. Raises StructureError if the pieces do not form valid structure."""
    body = _items(items, sentences, rewrites, texts)
    return canonicalize(f"<Think>{body}</Think>" if wrap_think else body)


def _items(items: tuple[Item, ...], sentences: list[str], rewrites: dict[int, str], texts: dict[str, BlockText]) -> str:
    out: list[str] = []
    for it in items:
        if isinstance(it, Sentences):
            out += [_sentence(k, sentences, rewrites) for k in range(it.first, it.last)]
        else:
            out.append(_block(it, sentences, rewrites, texts))
            out.append("\n")  # plain text after </Parallel> starts on its own line
    return "".join(out)


def _sentence(k: int, sentences: list[str], rewrites: dict[int, str]) -> str:
    original = sentences[k]
    if k not in rewrites:
        return original
    trailing = original[len(original.rstrip()):]
    return rewrites[k].strip() + (trailing or " ")


def _block(block: Block, sentences: list[str], rewrites: dict[int, str], texts: dict[str, BlockText]) -> str:
    text = texts[block.id]
    outlines = "".join(f"<Outline>{i}: {o.strip()}</Outline>" for i, o in enumerate(text.outlines, start=1))
    paths = "".join(
        f"<Path>{i}: {_items(m.items, sentences, rewrites, texts).strip()}</Path>"
        for i, m in enumerate(block.members, start=1)
    )
    return f"<Parallel><Goal>{text.goal.strip()}{outlines}</Goal>{paths}<Conclusion>{text.conclusion.strip()}</Conclusion></Parallel>"
