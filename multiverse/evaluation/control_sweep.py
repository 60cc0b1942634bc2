"""Sweeps of one decoding control (engine/controls.py): accuracy against degree of parallelism, one point per value.

    multiverse eval --tasks remainders --limit 100 --sweep fork_threshold=0.5,0.7,0.9,0.95

Each value is an ordinary resumable run in `OUT/sweep/<name>=<value>/records.jsonl` with the run's other
settings. Output: `control_sweep.json`, `control_sweep.md` (a table) and `sweep_<name>.png`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from engine import controls
from multiverse.evaluation.backends.base import Backend
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.records import RecordFile
from multiverse.evaluation.report import show, summarise
from multiverse.evaluation.runner import run_samples
from multiverse.evaluation.tasks import Problem

SWEEPABLE = ("fork_threshold", "fork_bias", "path_factor", "max_concurrent_paths")


def parse_sweep(spec: str) -> dict[str, Any]:
    """"fork_threshold=0.5,0.7" -> {"name": "fork_threshold", "values": [0.5, 0.7]}; each value checked."""
    name, sep, values = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        raise ValueError(f"--sweep {spec}: expected NAME=V1,V2,... with NAME one of {', '.join(SWEEPABLE)}")
    parsed = [controls.parse_value(name, v.strip()) for v in values.split(",") if v.strip()]
    if not parsed:
        raise ValueError(f"--sweep {spec}: give at least one value")
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"--sweep {spec}: a value is repeated")
    for v in parsed:
        controls.check({**controls.DEFAULTS, **at_value(name, v)})
    return {"name": name, "values": parsed}


def at_value(name: str, value: Any) -> dict[str, Any]:
    """The controls that set `name` to `value` (the factor rule switches itself on with its factor)."""
    extra = {"path_rule": "factor" if value is not None else None} if name == "path_factor" else {}
    return {name: value, **extra}


def control_sweep(
    backend: Backend, problems: Sequence[tuple[str, Problem]], config: EvalConfig, sweep: dict[str, Any], out_dir: str,
    progress: bool = True,
) -> list[dict[str, Any]]:
    rows = []
    name = sweep["name"]
    for value in sweep["values"]:
        point = replace(config, controls={**config.controls, **at_value(name, value)})
        records = RecordFile(os.path.join(out_dir, "sweep", f"{name}={value}", "records.jsonl"))
        done = run_samples(backend, problems, point, records, desc=f"{name}={value}", progress=progress)
        for task, s in summarise(done, config.samples).items():
            rows.append({"name": name, "value": value, "task": task, **s, "accuracy": s[f"avg@{config.samples}"]})
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| task | control | accuracy ± SE | 95% CI | parallelism | forked | <Parallel> kept | critical path | tokens |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        a, rate = r["accuracy"], r["fork_acceptance_rate"]
        lines.append(
            f"| {r['task']} | {r['name']}={r['value']} | {show(a)} | [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] "
            f"| {show(r['degree_of_parallelism'], 2)} | {show(r['forked'], 2)} | {'-' if rate is None else f'{rate:.2f}'} "
            f"| {show(r['critical_path'], 0)} | {show(r['generated_tokens'], 0)} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], out_dir: str) -> str:
    """Accuracy (95% CI) against mean degree of parallelism, one line per task, each point labelled by its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = rows[0]["name"]
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        x = [r["degree_of_parallelism"]["mean"] for r in mine]
        y = [r["accuracy"]["mean"] for r in mine]
        err = [[m - r["accuracy"]["ci95"][0] for m, r in zip(y, mine)], [r["accuracy"]["ci95"][1] - m for m, r in zip(y, mine)]]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label=task)
        labels: dict[tuple[float, float], list[str]] = {}  # values at one point share one label ("-9.0, 0.0")
        for xi, yi, r in zip(x, y, mine):
            labels.setdefault((round(xi, 4), round(yi, 4)), []).append(f"{r['value']}")
        for (xi, yi), values in labels.items():
            ax.annotate(", ".join(values), (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.margins(x=0.2, y=0.08)
    ax.set_xlabel("degree of parallelism (generated tokens / critical path)")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"sweep of {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, f"sweep_{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
