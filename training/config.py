"""The training run's configuration: frozen dataclasses read from YAML, with `--set section.key=value` overrides.

Every key a YAML file may hold is a field below; an unknown key is an error that names the key and the file.
The sections are `model`, `data` (with `fields` and `prompt`) and `train`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiverse.config_io import ConfigError, check_at_least, check_choice, load


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = ""  # local directory or hub name of a causal LM (and its tokenizer)
    tokenizer: str | None = None  # defaults to name_or_path
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto: flex_attention on CUDA, sdpa on CPU; or sdpa | eager | flex_attention
    gradient_checkpointing: bool = False
    pad_token: str | None = None  # None: keep the tokenizer's, else <|fim_pad|> when present, else eos
    trust_remote_code: bool = False


@dataclass(frozen=True)
class FieldNames:
    """Column names of the rows (the Multiverse-1K / s1K-1.1 names by default)."""

    question: str = "question"
    parallel: str = "deepseek_thinking_trajectory_parallel"
    sequential: str = "deepseek_thinking_trajectory"
    attempt: str = "deepseek_attempt"


@dataclass(frozen=True)
class PromptConfig:
    multiverse_suffix: str = " Think step by step and in parallel before answering."
    autoregressive_suffix: str = " Think step by step before answering."
    answer_prefix: str = "\n\nAnswer: "
    system_prompt: str | None = None  # None: whatever the chat template does without a system turn


@dataclass(frozen=True)
class DataConfig:
    multiverse: str | None = None  # HF dataset name or local .jsonl/.json/.parquet with Multiverse rows
    autoregressive: str | None = None  # rows with only a sequential trace; None: the `sequential` column of `multiverse`
    split: str = "train"
    subset: str | None = None  # HF dataset configuration name
    max_rows: int | None = None  # keep the first N rows of each source (for smoke runs)
    fields: FieldNames = field(default_factory=FieldNames)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    mixing: str = "curriculum"  # curriculum (8 stages, read in order) | shuffled | multiverse_only
    block_size: int = 32768  # every sample (or packed row) is at most this many tokens
    truncation: str = "cut"  # cut: keep the first block_size tokens | drop: skip longer samples
    packing: bool = False  # concatenate samples into rows of up to block_size tokens
    on_bad_row: str = "error"  # error: stop at a malformed Multiverse trace (naming the row) | skip: count and go on
    seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/multiverse"
    mode: str = "multiverse"  # multiverse | autoregressive (the baseline: sequential twins, causal attention)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    micro_batch_size: int = 1
    grad_accum: int = 1
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    bf16: bool = False
    logging_steps: int = 1
    save_steps: int = 100
    save_total_limit: int | None = 2
    save_only_model: bool = False  # True drops optimizer state (smaller, but then resume restarts the optimizer)
    resume: str | None = None  # a checkpoint directory, or "auto" (the newest in output_dir)
    seed: int = 42
    mask_block: int = 128  # FlexAttention block size; also the tile used to report skipped blocks
    report_to: str = "none"  # none | tensorboard | wandb ... (HF Trainer integrations)
    dataloader_workers: int = 0


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        check_choice("data.mixing", self.data.mixing, ("curriculum", "shuffled", "multiverse_only"))
        check_choice("data.truncation", self.data.truncation, ("cut", "drop"))
        check_choice("data.on_bad_row", self.data.on_bad_row, ("error", "skip"))
        check_choice("train.mode", self.train.mode, ("multiverse", "autoregressive"))
        if not self.model.name_or_path:
            raise ConfigError("model.name_or_path is required (a local directory or a hub name)", "model")
        if not self.data.multiverse and not self.data.autoregressive:
            raise ConfigError("data.multiverse or data.autoregressive must name a dataset or a file", "data")
        check_at_least(self, ("data.block_size", "train.micro_batch_size", "train.grad_accum", "train.mask_block"), 1)
        return self


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:  # type: ignore[assignment]
    """Read a YAML file (or start from defaults when path is None) and apply `section.key=value` overrides."""
    return load(Config, path, overrides)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
