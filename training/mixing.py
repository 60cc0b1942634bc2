"""The order in which examples are read: the reference's 8-stage curriculum, or one shuffled mixture.

The trainer reads the list this module returns front to back (a sequential sampler), so the order here IS the
training order, and a resumed run sees the same order as an uninterrupted one.

Curriculum (M = Multiverse-side rows, A = autoregressive rows, each shuffled once with the seed):
  1: A   2: A   3: 90% A + 10% M   4: first halves of A and M   5: second halves   6: 90% M + 10% A   7: M   8: M
Mixed stages are shuffled inside themselves; pure stages keep the shuffled order. The 10% / 90% parts are
random subsets drawn with the seed. In the autoregressive baseline, M holds the sequential twins.
"""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")

# Each stage: (share of A, share of M, half) where half = None | 0 (first half) | 1 (second half).
STAGES: tuple[tuple[float, float, int | None], ...] = (
    (1.0, 0.0, None),
    (1.0, 0.0, None),
    (0.9, 0.1, None),
    (0.5, 0.5, 0),
    (0.5, 0.5, 1),
    (0.1, 0.9, None),
    (0.0, 1.0, None),
    (0.0, 1.0, None),
)


def _shuffled(rows: Sequence[T], rng: random.Random) -> list[T]:
    out = list(rows)
    rng.shuffle(out)
    return out


def _share(rows: list[T], share: float, half: int | None, rng: random.Random) -> list[T]:
    if half is not None:
        mid = len(rows) // 2
        return rows[:mid] if half == 0 else rows[mid:]
    if share >= 1.0:
        return list(rows)
    return rng.sample(rows, round(share * len(rows)))


def curriculum(mv: Sequence[T], ar: Sequence[T], seed: int) -> list[T]:
    """Eight stages in order, from autoregressive rows to Multiverse rows."""
    if not mv or not ar:
        raise ValueError(
            f"curriculum mixing needs both Multiverse and autoregressive rows (got {len(mv)} and {len(ar)}); "
            "set data.autoregressive, or use data.mixing: shuffled / multiverse_only"
        )
    rng = random.Random(seed)
    mv_s, ar_s = _shuffled(mv, rng), _shuffled(ar, rng)
    order: list[T] = []
    for a_share, m_share, half in STAGES:
        part = _share(ar_s, a_share, half, rng) if a_share else []
        part += _share(mv_s, m_share, half, rng) if m_share else []
        order += _shuffled(part, rng) if a_share and m_share else part
    return order


def shuffled(mv: Sequence[T], ar: Sequence[T], seed: int) -> list[T]:
    """All rows of both kinds in one random order."""
    return _shuffled([*mv, *ar], random.Random(seed))


def mix(mv: Sequence[T], ar: Sequence[T], how: str, seed: int) -> list[T]:
    if how == "curriculum":
        return curriculum(mv, ar, seed)
    if how == "shuffled":
        return shuffled(mv, ar, seed)
    if how == "multiverse_only":
        return _shuffled(mv, random.Random(seed))
    raise ValueError(f"unknown mixing {how!r}; expected curriculum, shuffled or multiverse_only")
