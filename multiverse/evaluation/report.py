"""Summaries of evaluation records: a table per task, JSON files and a parallelism plot."""
from __future__ import annotations

import json
import os
import statistics
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task (and "all"): accuracy, tokens, critical path, degree of parallelism, speedup when measured."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["task"], []).append(r)
    if len(groups) > 1:
        groups["all"] = list(records)
    return {task: _summary(rows) for task, rows in groups.items()}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    dop = [r["degree_of_parallelism"] for r in rows]
    out: dict[str, Any] = {
        "n": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "mean_generated_tokens": statistics.fmean(r["generated_tokens"] for r in rows),
        "mean_critical_path": statistics.fmean(r["critical_path"] for r in rows),
        "mean_degree_of_parallelism": statistics.fmean(dop),
        "median_degree_of_parallelism": statistics.median(dop),
        "with_forks": sum(r["forks"] > 0 for r in rows) / len(rows),
    }
    if all("seq_batch_wall_s" in r for r in rows):
        # a batch's wall time is shared by its rows: count each batch once
        batches = {r["batch"]: (r["batch_wall_s"], r["seq_batch_wall_s"]) for r in rows}
        par = sum(p for p, _ in batches.values())
        seq = sum(q for _, q in batches.values())
        out["sequential_accuracy"] = sum(r["seq_correct"] for r in rows) / len(rows)
        out["speedup"] = seq / par if par > 0 else float("nan")
    return out


def print_table(summary: dict[str, dict[str, Any]], console: Console | None = None) -> None:
    table = Table(title="multiverse eval")
    columns = ["task", "n", "accuracy", "tokens", "critical path", "parallelism (mean / median)", "speedup"]
    for c in columns:
        table.add_column(c, justify="right" if c != "task" else "left")
    for task, s in summary.items():
        table.add_row(
            task,
            str(s["n"]),
            f"{s['accuracy']:.3f}" + (f" (seq {s['sequential_accuracy']:.3f})" if "sequential_accuracy" in s else ""),
            f"{s['mean_generated_tokens']:.0f}",
            f"{s['mean_critical_path']:.0f}",
            f"{s['mean_degree_of_parallelism']:.2f} / {s['median_degree_of_parallelism']:.2f}",
            f"{s['speedup']:.2f}x" if "speedup" in s else "-",
        )
    (console or Console()).print(table)


def save(records: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: str) -> list[str]:
    """results.jsonl, summary.json and parallelism.png under out_dir; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("results.jsonl", "summary.json", "parallelism.png")]
    with open(paths[0], "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(paths[1], "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    _plot(records, paths[2])
    return paths


def _plot(records: Sequence[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        ax.scatter([r["critical_path"] for r in rows], [r["generated_tokens"] for r in rows], s=12, label=task)
    top = max([r["generated_tokens"] for r in records] + [1])
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="sequential (1.0x)")
    ax.set_xlabel("critical path (positions)")
    ax.set_ylabel("generated tokens")
    ax.set_title("degree of parallelism = tokens / critical path")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
