"""Entropy telemetry in an eval: does path entropy predict a wrong answer, and what would an early stop save?

- Path entropy of a sample: the largest mean token entropy over its paths (the most uncertain path; the root's
  mean when it did not fork). AUROC: the probability that a wrong sample has a higher path entropy than a right
  one (0.5 = no signal; ties count half).
- Early stop (DeepConf-style, on entropy): a sample stops at its first sampled token where the mean entropy of the
  last `window` sampled tokens (final merged order) exceeds h. For each h in a few quantiles of the samples' peak
  windowed entropy, the report counts the samples stopped, how many of them were right (answers lost), and the
  sampled tokens after the stop points (saved).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WINDOW = 16
QUANTILES = (0.5, 0.75, 0.9)


def path_entropy(record: dict[str, Any]) -> float | None:
    tree = [b for b in record.get("tree", []) if b.get("mean_entropy") is not None]
    paths = [b["mean_entropy"] for b in tree if b.get("depth", 0) >= 1]
    if paths:
        return max(paths)
    return tree[0]["mean_entropy"] if tree else None


def auroc(scores: Sequence[float], wrong: Sequence[bool]) -> float | None:
    """P(score of a wrong sample > score of a right one), ties half; None without both kinds."""
    bad = [s for s, w in zip(scores, wrong) if w]
    good = [s for s, w in zip(scores, wrong) if not w]
    if not bad or not good:
        return None
    wins = sum((b > g) + 0.5 * (b == g) for b in bad for g in good)
    return wins / (len(bad) * len(good))


def windowed(entropies: Sequence[float], window: int) -> list[float]:
    """Mean over the last `window` values at each index (fewer at the start)."""
    out, total = [], 0.0
    for i, h in enumerate(entropies):
        total += h - (entropies[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def early_stop(records: Sequence[dict[str, Any]], h: float, window: int = WINDOW) -> dict[str, Any]:
    stopped = lost = saved = total = 0
    for r in records:
        series = windowed(r["entropies"], window)
        total += len(series)
        at = next((i for i, x in enumerate(series) if x > h), None)
        if at is not None:
            stopped += 1
            lost += bool(r["correct"])
            saved += len(series) - at - 1
    return {"threshold": h, "stopped": stopped, "stopped_correct": lost, "tokens_saved": saved,
            "saved_fraction": saved / total if total else 0.0}


def report(records: Sequence[dict[str, Any]], window: int = WINDOW) -> dict[str, Any] | None:
    """AUROC and the early-stop table of these records; None when they carry no entropies (e.g. openai backend)."""
    rows = [r for r in records if r.get("entropies") and path_entropy(r) is not None]
    if not rows:
        return None
    scores = [path_entropy(r) for r in rows]
    peaks = sorted(max(windowed(r["entropies"], window)) for r in rows)
    thresholds = sorted({peaks[min(len(peaks) - 1, int(q * len(peaks)))] for q in QUANTILES})
    return {
        "samples": len(rows),
        "auroc_path_entropy": auroc(scores, [not r["correct"] for r in rows]),
        "mean_path_entropy_right": _mean([s for s, r in zip(scores, rows) if r["correct"]]),
        "mean_path_entropy_wrong": _mean([s for s, r in zip(scores, rows) if not r["correct"]]),
        "window": window,
        "early_stop": [early_stop(rows, h, window) for h in thresholds],
    }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
