"""The viewer's plots as base64 PNGs: the run's own (budget curves) and an overview drawn from the records."""
from __future__ import annotations

import base64
import glob
import io
import os
from collections.abc import Sequence
from typing import Any


def png_data(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def run_pngs(run_dir: str) -> list[tuple[str, str]]:
    """(name, data URI) of each PNG the run wrote (budget_<task>.png), in name order."""
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "*.png"))):
        with open(path, "rb") as f:
            out.append((os.path.basename(path), png_data(f.read())))
    return out


def overview(summaries: dict[str, dict[str, Any]], records: Sequence[dict[str, Any]], samples: int) -> str:
    """Accuracy per task with its 95% Wilson interval (model and baseline), and each output's critical path
    against its generated tokens (on the diagonal: sequential; below it: parallel), correct and wrong apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, tok_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    key = f"avg@{samples}"
    sides = [(label, s) for label, s in summaries.items() if s]
    tasks = sorted({t for _, s in sides for t in s if t != "all"})
    width = 0.8 / max(1, len(sides))
    for j, (label, summ) in enumerate(sides):
        xs = [i + j * width for i, t in enumerate(tasks) if t in summ]
        ests = [summ[t][key] for t in tasks if t in summ]
        means = [e["mean"] for e in ests]
        err = [[m - e["ci95"][0] for m, e in zip(means, ests)], [e["ci95"][1] - m for m, e in zip(means, ests)]]
        acc_ax.bar(xs, means, width=width, yerr=err, capsize=3, label=label, alpha=0.85)
    acc_ax.set_xticks([i + width * (len(sides) - 1) / 2 for i in range(len(tasks))], tasks)
    acc_ax.set_ylim(0, 1.05)
    acc_ax.set_ylabel(f"{key} (95% Wilson CI)")
    acc_ax.set_title("accuracy per task")
    acc_ax.legend(fontsize=8)
    for correct, color, name in ((True, "#137333", "correct"), (False, "#b3261e", "wrong")):
        mine = [r for r in records if bool(r["correct"]) is correct]
        tok_ax.scatter([r["generated_tokens"] for r in mine], [r["critical_path"] for r in mine], s=12, alpha=0.6,
                       color=color, label=f"{name} ({len(mine)})")
    top = max([r["generated_tokens"] for r in records] + [1])
    tok_ax.plot([0, top], [0, top], color="#888", lw=1, ls="--", label="sequential (critical = generated)")
    tok_ax.set_xlabel("generated tokens (all branches)")
    tok_ax.set_ylabel("critical path")
    tok_ax.set_title("each output of the model")
    tok_ax.legend(fontsize=8)
    for ax in (acc_ax, tok_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return png_data(buffer.getvalue())
