"""Budget control (the paper's figure): accuracy against budget, for the model and an autoregressive baseline.

Each (model, budget) is an ordinary resumable run in `OUT/<label>/budget-<B>/`; budgets run in increasing
order. `critical` budgets cap the critical path (SamplingParams.max_critical_tokens), `total` budgets the
tokens over all branches. Output: `budget_sweep.json`, `budget_sweep.md` (a table) and `budget_<task>.png`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multiverse.evaluation.backends.base import Backend
from multiverse.evaluation.protocol import EvalConfig, parse_budgets  # noqa: F401 - parse_budgets: its old home
from multiverse.evaluation.records import RecordFile
from multiverse.evaluation.report import show, summarise
from multiverse.evaluation.runner import run_samples
from multiverse.evaluation.tasks import Problem


@dataclass(frozen=True)
class Arm:
    label: str  # "model" | "baseline"
    backend: Backend
    config: EvalConfig
    name: str = ""  # shown in the legend (the model's directory name)


def budget_sweep(
    arms: Sequence[Arm], problems: Sequence[tuple[str, Problem]], budgets: Sequence[int], kind: str, out_dir: str,
    progress: bool = True, warn: Any = None,
) -> list[dict[str, Any]]:
    rows = []
    for arm in arms:
        for budget in budgets:
            config = arm.config.with_budget(budget, kind)
            records = RecordFile(os.path.join(out_dir, arm.label, f"budget-{budget}", "records.jsonl"))
            done = run_samples(arm.backend, problems, config, records, desc=f"{arm.label} @ {budget}", progress=progress,
                               **({"warn": warn} if warn else {}))
            for task, s in summarise(done, config.samples).items():
                rows.append({"label": arm.label, "name": arm.name, "budget": budget, "kind": kind, "task": task, **s,
                             "accuracy": s[f"avg@{config.samples}"]})
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| task | model | budget | accuracy ± SE | 95% CI | critical path | tokens | parallelism | truncated |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        a = r["accuracy"]
        lines.append(
            f"| {r['task']} | {r['label']} | {r['budget']} ({r['kind']}) | {show(a)} | [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] "
            f"| {show(r['critical_path'], 0)} | {show(r['generated_tokens'], 0)} | {show(r['degree_of_parallelism'], 2)} "
            f"| {show(r['truncated'], 2)} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """One PNG per task: accuracy (95% CI) and mean critical path against budget, model and baseline side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task in sorted({r["task"] for r in rows}):
        fig, (acc_ax, len_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
        for label, style in (("model", "o-"), ("baseline", "s--")):
            mine = sorted((r for r in rows if r["task"] == task and r["label"] == label), key=lambda r: r["budget"])
            if not mine:
                continue
            x = [r["budget"] for r in mine]
            y = [r["accuracy"]["mean"] for r in mine]
            err = [[m - r["accuracy"]["ci95"][0] for m, r in zip(y, mine)], [r["accuracy"]["ci95"][1] - m for m, r in zip(y, mine)]]
            kind_name = "Multiverse model" if label == "model" else "baseline, no forks"
            name = f"{kind_name} ({mine[0]['name']})" if mine[0].get("name") else kind_name
            acc_ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=name)
            len_ax.plot(x, [r["critical_path"]["mean"] for r in mine], style, label=name)
        kind = rows[0]["kind"]
        budgets = sorted({r["budget"] for r in rows})
        for ax in (acc_ax, len_ax):
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
            ax.set_xlabel(f"budget ({'critical-path positions' if kind == 'critical' else 'total tokens'})")
            ax.grid(alpha=0.3)
        acc_ax.set_ylabel("accuracy (95% CI)")
        acc_ax.set_ylim(-0.02, 1.02)
        acc_ax.set_title(f"{task}: accuracy against budget")
        len_ax.set_ylabel("mean critical path")
        len_ax.set_title("latency used")
        acc_ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, f"budget_{task}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
