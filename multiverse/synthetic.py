"""Random canonical Multiverse traces (nested blocks, varied path counts) for tests and benchmarks.

Invariant: every trace returned is canonical (`canonicalize(t) == t`) and parses.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

_WORDS = ("so", "then", "we", "check", "the", "sum", "case", "value", "is", "even", "odd", "prime", "and", "x", "y")


@dataclass(frozen=True)
class SyntheticShape:
    max_depth: int = 2  # nesting levels of blocks
    max_paths: int = 4  # paths per block (at least 1)
    words: tuple[int, int] = (3, 12)  # words per text span
    block_chance: float = 0.5  # chance that a text span holds a block (while depth allows)


def _text(rng: random.Random, shape: SyntheticShape) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(*shape.words)))


def _block(rng: random.Random, shape: SyntheticShape, prefix: str, depth: int) -> str:
    n = rng.randint(1, shape.max_paths)
    labels = [f"{prefix}{i + 1}" for i in range(n)]
    goal = "".join(f"<Outline>{label}: {_text(rng, shape)}</Outline>" for label in labels)
    paths = "".join(f"<Path>{label}: {_span(rng, shape, label + '.', depth + 1)}</Path>" for label in labels)
    return f"<Parallel><Goal>{_text(rng, shape)}{goal}</Goal>{paths}<Conclusion>{_text(rng, shape)}</Conclusion></Parallel>"


def _span(rng: random.Random, shape: SyntheticShape, prefix: str, depth: int) -> str:
    text = _text(rng, shape)
    if depth < shape.max_depth and rng.random() < shape.block_chance:
        return f"{text} {_block(rng, shape, prefix, depth)} {_text(rng, shape)}"
    return text


def synthetic_trace(seed: int, blocks: int = 1, shape: SyntheticShape = SyntheticShape()) -> str:
    """A trace with `blocks` top-level blocks separated by free text."""
    rng = random.Random(seed)
    parts = [_text(rng, shape)]
    for _ in range(blocks):
        parts.append(_block(rng, shape, "", 0))
        parts.append(_text(rng, shape))
    return " ".join(parts)
