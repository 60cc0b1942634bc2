"""Shared helpers of the trainer tests: tiny model + rows on disk, and a config over them."""
from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from training.config import Config, load_config
from training.tiny_assets import synthetic_rows, write_jsonl, write_tiny_model


def write_assets(root: Path, rows: int = 12) -> Path:
    write_tiny_model(root / "model", hidden_size=48)  # no structure tags yet: the trainer adds them
    write_jsonl(synthetic_rows(rows), root / "data.jsonl")
    return root


def tiny_config(assets: Path, out: Path, *extra: str) -> Config:
    return load_config(None, tiny_overrides(assets, out, *extra))


def tiny_overrides(assets: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={assets / 'model'}",
        "model.attn_implementation=sdpa",
        "model.dtype=float32",
        f"data.multiverse={assets / 'data.jsonl'}",
        "data.block_size=512",
        f"data.cache_dir={out.parent / 'cache'}",
        f"train.output_dir={out}",
        "train.learning_rate=0.003",
        "train.warmup_ratio=0.1",
        "train.logging_steps=1",
        "train.micro_batch_size=2",
        *extra,
    ]


def losses(history: list[dict]) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history if "loss" in h}


class StopAt(TrainerCallback):
    """Stops training after `step` optimizer steps (a run interrupted at a known point)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control
