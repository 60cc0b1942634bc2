"""Statistics of an evaluation: means with standard errors and 95% intervals, unbiased pass@k, cons@k.

Samples of one question are correlated, so the unit is the question: avg@k is the mean over questions of each
question's mean accuracy over its k samples, and its standard error is the spread of those per-question means
(sample standard deviation / sqrt(questions)). Proportions (accuracy, pass@k, cons@k, the fraction that forked,
valid, truncated) get a Wilson score interval: inside [0, 1], and not of zero width at 0 or 1 (12/12 correct gives
[0.757, 1], not [1, 1]). Its n is the number of questions, or where the samples of a question disagree the
effective n = p(1-p) / SE^2 (the clustered samples' design effect), never more than the questions. Other numbers
(tokens, critical path, parallelism) get mean ± 1.96 SE.
pass@k is the unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k) per question, then averaged.
cons@k: per question, the majority answer of the first k samples (equivalent answers vote together; a tie goes
to the answer seen first; samples without an answer do not vote) is graded.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959964


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float  # standard error (0.0 for a single value)
    n: int
    ci95: tuple[float, float]
    interval: str = "normal"  # "normal": mean ± 1.96 SE; "wilson": the Wilson score interval of a proportion

    def show(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.se:.{digits}f}"

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(values: Sequence[float]) -> Estimate:
    vals = [float(v) for v in values]
    if not vals:
        return Estimate(float("nan"), float("nan"), 0, (float("nan"), float("nan")))
    mean = statistics.fmean(vals)
    se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return Estimate(mean, se, len(vals), (mean - Z95 * se, mean + Z95 * se))


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion p observed over n trials (n may be an effective size)."""
    if n <= 0:
        return (0.0, 1.0)
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, min(p, center - half)), min(1.0, max(p, center + half)))  # rounding never excludes p


def proportion(values: Sequence[float]) -> Estimate:
    """`estimate` of values in [0, 1] (per-question means of 0/1 outcomes) with a Wilson interval."""
    est = estimate(values)
    if est.n == 0:
        return est
    if any(not 0.0 <= float(v) <= 1.0 for v in values):
        raise ValueError("proportion: every value must lie in [0, 1]")
    p = est.mean
    binary = all(float(v) in (0.0, 1.0) for v in values)  # one sample per question: plain Wilson over n
    n_eff = float(est.n) if binary or est.se == 0 else min(float(est.n), p * (1 - p) / est.se**2)
    return Estimate(est.mean, est.se, est.n, wilson(p, n_eff), "wilson")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one question with n samples of which c are correct (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority(answers: Sequence[str | None], same: Callable[[str, str], bool]) -> str | None:
    """The most frequent answer (equivalence classes under `same`); ties go to the earliest class."""
    classes: list[list[str]] = []
    for a in answers:
        if a is None:
            continue
        for cls in classes:
            if same(cls[0], a):
                cls.append(a)
                break
        else:
            classes.append([a])
    if not classes:
        return None
    best = max(len(c) for c in classes)
    return next(c[0] for c in classes if len(c) == best)


def per_question(rows: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["task"], r["id"], r["sample"])):
        out.setdefault((r["task"], r["id"]), []).append(r)
    return out


def avg_at_k(rows: Sequence[dict]) -> Estimate:
    return proportion([statistics.fmean(r["correct"] for r in group) for group in per_question(rows).values()])


def pass_at_k_estimate(rows: Sequence[dict], k: int) -> Estimate | None:
    groups = per_question(rows).values()
    if any(len(g) < k for g in groups):
        return None
    return proportion([pass_at_k(len(g), sum(r["correct"] for r in g), k) for g in groups])


def cons_at_k(rows: Sequence[dict], k: int, grade_answer: Callable[[dict, str], bool], same: Callable[[str, str], bool]) -> Estimate | None:
    """Majority vote of the first k samples per question, graded with `grade_answer(record, answer)`."""
    groups = per_question(rows).values()
    if any(len(g) < k for g in groups):
        return None
    scores = []
    for g in groups:
        voted = majority([r["predicted"] for r in g[:k]], same)
        scores.append(float(voted is not None and grade_answer(g[0], voted)))
    return proportion(scores)
