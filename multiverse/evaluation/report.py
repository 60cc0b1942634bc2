"""Summaries of records: per task (and "all") every number with its standard error and 95% interval."""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from multiverse.evaluation.entropy import report as entropy_report
from multiverse.evaluation.grading import equivalent
from multiverse.evaluation.metrics import Estimate, avg_at_k, cons_at_k, estimate, pass_at_k_estimate, per_question, proportion


def _grade_vote(record: dict[str, Any], answer: str) -> bool:
    if record["kind"] == "choice":
        return answer == record["gold"]
    return equivalent(record["gold"], answer)


def _same(kind: str):  # noqa: ANN202 - a predicate
    return (lambda a, b: a == b) if kind == "choice" else equivalent


def _per_question_mean(rows: Sequence[dict[str, Any]], field: str, share: bool = False) -> Estimate:
    """Mean over questions of each question's mean of `field` (`share`: a 0/1 field, with a Wilson interval)."""
    means = [statistics.fmean(float(r[field]) for r in g) for g in per_question(rows).values()]
    return proportion(means) if share else estimate(means)


def summarise(records: Sequence[dict[str, Any]], samples: int) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["task"], []).append(r)
    if len(groups) > 1:
        groups["all"] = list(records)
    return {task: summary(rows, samples) for task, rows in groups.items()}


def summary(rows: Sequence[dict[str, Any]], samples: int) -> dict[str, Any]:
    """Estimates over questions (each question's mean over its samples is one observation)."""
    out: dict[str, Any] = {
        "questions": len(per_question(rows)),
        "samples": len(rows),
        f"avg@{samples}": avg_at_k(rows).as_dict(),
    }
    ks = sorted({1, samples})
    for k in ks:
        est = pass_at_k_estimate(rows, k)
        if est is not None:
            out[f"pass@{k}"] = est.as_dict()
    if samples > 1:
        kinds = {r["kind"] for r in rows}
        same = _same(kinds.pop()) if len(kinds) == 1 else equivalent
        est = cons_at_k(rows, samples, _grade_vote, same)
        if est is not None:
            out[f"cons@{samples}"] = est.as_dict()
    for field in ("generated_tokens", "forced_tokens", "critical_path", "degree_of_parallelism"):
        out[field] = _per_question_mean(rows, field).as_dict()
    out["forked"] = _per_question_mean([{**r, "f": r["forks"] > 0} for r in rows], "f", share=True).as_dict()
    forked = [r for r in rows if r["forks"] > 0]  # the problems where the model used a block
    for field in ("degree_of_parallelism", "critical_path"):
        out[f"{field}_forked"] = _per_question_mean(forked, field).as_dict() if forked else None
    proposed = sum(r.get("fork_proposals", 0) for r in rows)
    out["fork_acceptance_rate"] = sum(r.get("fork_accepted", 0) for r in rows) / proposed if proposed else None
    out["controls"] = rows[0].get("controls") if rows else None  # engine/controls.py, as every record of the run
    out["entropy"] = entropy_report(rows)  # AUROC of path entropy vs correctness, early-stop savings
    out["valid"] = _per_question_mean(rows, "valid", share=True).as_dict()
    out["truncated"] = _per_question_mean(rows, "truncated", share=True).as_dict()
    out["finish_reasons"] = dict(Counter(r["finish_reason"] for r in rows))
    out["methods"] = dict(Counter(r["method"] for r in rows))
    return out


def show(est: dict[str, Any] | None, digits: int = 3) -> str:
    if est is None:
        return "-"
    return f"{est['mean']:.{digits}f} ± {est['se']:.{digits}f}"


def print_table(summaries: dict[str, dict[str, Any]], samples: int, console: Console | None = None, title: str = "multiverse eval") -> None:
    table = Table(title=f"{title} (mean ± standard error over questions)")
    metric = [f"avg@{samples}"] + ([f"pass@{samples}", f"cons@{samples}"] if samples > 1 else [])
    cols = ["task", "questions", *metric, "95% CI (Wilson)", "tokens", "critical path", "parallelism", "forked", "valid"]
    for c in cols:
        table.add_column(c, justify="left" if c == "task" else "right")
    for task, s in summaries.items():
        acc = s[f"avg@{samples}"]
        table.add_row(
            task,
            str(s["questions"]),
            *[show(s.get(m)) for m in metric],
            f"[{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]",
            show(s["generated_tokens"], 0),
            show(s["critical_path"], 0),
            show(s["degree_of_parallelism"], 2),
            show(s["forked"], 2),
            show(s["valid"], 2),
        )
    (console or Console()).print(table)
