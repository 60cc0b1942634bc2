"""The Hugging Face Trainer, adapted: curriculum order, Multiverse masks, and the extra log fields.

Scale comes from the Trainer's own accelerate integration: launched with `accelerate launch --config_file
<fsdp.yaml>` (or torchrun) the same code runs under FSDP full shard, activation checkpointing and bf16.
Logged every `logging_steps`: loss, learning_rate, grad_norm (Trainer), plus
  tokens_per_s          non-pad tokens of all processes per second of wall time since the previous log
  attn_blocks_skipped   fraction of the (query block, key block) tiles a causal kernel would compute that the
                        Multiverse mask skips (sibling paths, other packed documents, padding)
"""
from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from training.config import Config


def training_arguments(cfg: Config, use_cpu: bool) -> TrainingArguments:
    t = cfg.train
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    return TrainingArguments(
        output_dir=t.output_dir,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size,
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
        save_total_limit=t.save_total_limit,
        save_only_model=t.save_only_model,
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="sequential",  # the order is decided by training.mixing
        remove_unused_columns=False,
        dataloader_num_workers=t.dataloader_workers,
        report_to=[] if t.report_to == "none" else [t.report_to],
        use_cpu=use_cpu,
    )


class MultiverseTrainer(Trainer):
    """Trainer that moves BlockMasks to the device and logs tokens/s and skipped attention blocks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
