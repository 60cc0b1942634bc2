"""The Hugging Face Trainer, adapted: curriculum order, Multiverse masks, and the extra log fields.

Scale comes from the Trainer's own accelerate integration: launched with `accelerate launch --config_file
<fsdp.yaml>` (or torchrun) the same code runs under FSDP full shard, activation checkpointing and bf16.
Logged every `logging_steps`: loss, learning_rate, grad_norm (Trainer), plus
  tokens_per_s          non-pad tokens of all processes per second of wall time since the previous log
  attn_blocks_skipped   fraction of the (query block, key block) tiles a causal kernel would compute that the
                        Multiverse mask skips (sibling paths, other packed documents, padding)
"""
from __future__ import annotations

import dataclasses
import difflib
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from training import checkpoints, fingerprint
from training.config import Config, ConfigError
from training.loss import LIGER_KERNELS


# TrainingArguments that the config sets itself; train.extra_args may not name them.
OWN_ARGS = frozenset((
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "adam_beta1", "adam_beta2", "max_grad_norm", "bf16", "activation_checkpointing", "logging_steps",
    "save_strategy", "save_steps", "save_total_limit", "save_only_model", "seed", "data_seed",
    "train_sampling_strategy", "remove_unused_columns", "dataloader_num_workers", "report_to", "use_cpu",
    "eval_strategy", "eval_steps", "prediction_loss_only", "push_to_hub", "hub_model_id", "use_liger_kernel",
    "liger_kernel_config",
))


def report_targets(value: str) -> list[str]:
    """train.report_to ("none", "tensorboard", "tensorboard,wandb", "all") -> names, each checked as installed."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    if names == ["all"]:
        return names
    available = set(get_available_reporting_integrations())
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"train.report_to: unknown integration {name!r}; known: none, all, "
                              + ", ".join(INTEGRATION_TO_CALLBACK))
        if name not in available:
            hint = f"pip install 'multiverse[{name}]'" if name in ("tensorboard", "wandb") else f"install {name}"
            raise ConfigError(f"train.report_to: {name} is not installed ({hint}), or set train.report_to: none")
    return names


def extra_arguments(extra: dict[str, Any]) -> dict[str, Any]:
    """train.extra_args checked against TrainingArguments' fields (and not one the config owns)."""
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    for name in extra:
        if name in OWN_ARGS:
            raise ConfigError(f"train.extra_args.{name} is set by the config itself; use the train.* key for it "
                              "(training/README.md lists them)")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            raise ConfigError(f"train.extra_args.{name} is not a TrainingArguments field"
                              + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return dict(extra)


def training_arguments(cfg: Config, use_cpu: bool, has_eval: bool = False, loss: str = "plain") -> TrainingArguments:
    t = cfg.train
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    evaluation: dict[str, Any] = {"eval_strategy": "no"}
    if has_eval and t.eval_steps:
        evaluation = {"eval_strategy": "steps", "eval_steps": t.eval_steps}
    return TrainingArguments(
        output_dir=t.output_dir,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        max_grad_norm=t.max_grad_norm,
        bf16=t.bf16,
        activation_checkpointing=cfg.model.gradient_checkpointing,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # MultiverseTrainer rotates, after a checkpoint is marked complete
        save_only_model=t.save_only_model,
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="sequential",  # the order is decided by training.mixing
        remove_unused_columns=False,
        dataloader_num_workers=t.dataloader_workers,
        report_to=report_targets(t.report_to),
        use_cpu=use_cpu,
        prediction_loss_only=True,  # evaluation reports eval_loss; no [B, L, V] logits are gathered
        push_to_hub=t.push_to_hub,
        hub_model_id=t.hub_model_id,
        use_liger_kernel=loss == "liger",
        liger_kernel_config=LIGER_KERNELS if loss == "liger" else None,
        **evaluation,
        **extra_arguments(t.extra_args),
    )


class MultiverseTrainer(Trainer):
    """Trainer that moves BlockMasks to the device, logs tokens/s and skipped attention blocks, marks complete
    checkpoints (with the run fingerprint) before rotating them, and saves the model's own `use_cache`."""

    def __init__(self, *args: Any, run_fingerprint: dict[str, Any] | None = None, keep_checkpoints: int | None = 2,
                 use_cache: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_fingerprint = run_fingerprint
        self.keep_checkpoints = keep_checkpoints
        self.use_cache = use_cache  # the model's value before training switched it off
        self._window = torch.zeros(3, dtype=torch.float64)  # tokens, skipped tiles, causal tiles since last log
        self._window_start = time.perf_counter()

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kw: Any) -> Any:
        stats = inputs.pop("mask_stats", None)
        if stats is not None and model.training:
            self._window += stats.detach().to("cpu", torch.float64)
        mask = inputs.get("attention_mask")
        if mask is not None and not isinstance(mask, torch.Tensor):  # a FlexAttention BlockMask
            inputs["attention_mask"] = mask.to(inputs["input_ids"].device)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        folder = Path(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            checkpoints.clear_mark(folder)
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank's shards and RNG state are on disk
        if self.args.should_save:
            if self.run_fingerprint is not None:
                fingerprint.write(folder, self.run_fingerprint)
            checkpoints.mark_complete(folder)  # last: from here on resume may trust this folder
            checkpoints.rotate(folder.parent, self.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        before = getattr(config, "use_cache", None)
        if config is not None:
            config.use_cache = self.use_cache  # saved configs keep the model's value, not training's False
        try:
            super()._save(output_dir, state_dict)
        finally:
            if config is not None:
                config.use_cache = before

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            window = self._gather(self._window)
            elapsed = max(time.perf_counter() - self._window_start, 1e-9)
            logs["tokens_per_s"] = round(float(window[0]) / elapsed, 1)
            if window[2] > 0:
                logs["attn_blocks_skipped"] = round(float(window[1] / window[2]), 4)
            self._window.zero_()
            self._window_start = time.perf_counter()
        super().log(logs, start_time)

    def _gather(self, window: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return window
        device = self.accelerator.device
        return self.accelerator.reduce(window.to(device, torch.float32), reduction="sum").cpu().double()
