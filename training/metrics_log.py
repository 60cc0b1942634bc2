"""`output_dir/metrics.jsonl`: one JSON line per Trainer log (training and evaluation), written by rank 0.

    {"step": 12, "epoch": 0.41, "time": 1764650000.1, "loss": 2.31, "grad_norm": 1.2, "learning_rate": 3e-4,
     "tokens_per_s": 2.1e4, "attn_blocks_skipped": 0.4}
    {"step": 12, ..., "eval_loss": 2.40, "eval_runtime": 0.8, ...}

A resumed run first drops the lines after its checkpoint's step (the part the interrupted run logged past the
checkpoint is trained again), so the file reads as one uninterrupted run. A fresh run starts the file anew.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

FILE = "metrics.jsonl"


def read(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


class JsonlMetrics(TrainerCallback):
    def __init__(self, output_dir: str, resumed: bool) -> None:
        self.path = Path(output_dir, FILE)
        self.resumed = resumed

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read(self.path) if r.get("step", 0) <= state.global_step] if self.resumed else []
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")
