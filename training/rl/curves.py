"""The RL curves: one PNG from metrics.jsonl (reward parts, accuracy and forks, parallelism, critical path,
KL and entropy against the step), rewritten at every checkpoint and at the end of training. Past 30 steps each
metric is drawn faintly per step (a step sees only a few rollouts) with its rolling mean over `SMOOTH` steps on top."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from training.metrics_log import FILE, read

PNG = "curves.png"
SMOOTH = 20  # steps in the rolling mean
PANELS = (  # (title, metric keys)
    ("reward", ("reward", "reward_correct", "reward_acceleration", "reward_format")),
    ("accuracy and forks", ("accuracy", "valid", "forked", "forked_forkable")),
    ("degree of parallelism", ("parallelism",)),
    ("tokens", ("critical_path", "generated_tokens")),
    ("KL to the start", ("kl",)),
    ("entropy (nats)", ("entropy",)),
)


def plot_curves(output_dir: str | Path, png: str = PNG) -> Path | None:
    """Draw output_dir/metrics.jsonl into output_dir/curves.png; None when no step has been logged yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read(Path(output_dir, FILE)) if "reward" in r]
    if not rows:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if not pts:
                continue
            if len(pts) < 30:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=key)
            else:
                line, = ax.plot(*zip(*pts), alpha=0.2, linewidth=0.8)
                steps, values = zip(*pts)
                ax.plot(steps, rolling(values, SMOOTH), color=line.get_color(), linewidth=1.8, label=f"{key} ({SMOOTH}-step mean)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"RL: {Path(output_dir).name} ({len(rows)} steps)")
    fig.tight_layout()
    out = Path(output_dir, png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def rolling(values: Any, n: int) -> list[float]:
    """Mean of each value with up to n-1 values before it (the first points average what exists)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out


class CurvesCallback(TrainerCallback):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            plot_curves(self.output_dir)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            plot_curves(self.output_dir)
