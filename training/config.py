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
class LoraConfig:
    """PEFT LoRA adapters (the `peft` extra); r = 0 trains all weights."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"  # "all-linear" or module names, e.g. [q_proj, v_proj]
    train_tag_embeddings: bool = True  # the twelve added tags' embedding (and tied head) rows stay trainable
    merge_on_save: bool = True  # output_dir gets the merged full model; the adapter goes to output_dir/adapter


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = ""  # local directory or hub name of a causal LM (and its tokenizer)
    tokenizer: str | None = None  # defaults to name_or_path
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto: flex_attention on CUDA, sdpa on CPU; or sdpa | eager | flex_attention
    gradient_checkpointing: bool = False
    pad_token: str | None = None  # None: keep the tokenizer's, else <|fim_pad|> when present, else eos
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


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
    loss_on_forced: bool = True  # False: no loss where the engine forces the token (<Path> LABEL ":", <Conclusion>),
    # as in RL; a path's label cannot be told from what the path sees (multiverse.encode.encode_trace_forced)
    seed: int = 42
    eval_fraction: float = 0.0  # hold out this share of the distinct questions (with all their rows) for evaluation
    eval_split: str | None = None  # or: a split of the hub dataset(s) (e.g. test) or a local file of Multiverse rows
    token_cache: bool = True  # reuse tokenised rows keyed by data hash + tokenizer + data settings
    cache_dir: str | None = None  # None: $MULTIVERSE_CACHE or ~/.cache/multiverse, subfolder tokens/


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
    report_to: str = "none"  # none | tensorboard | wandb ... (HF Trainer integrations, checked as installed)
    dataloader_workers: int = 0
    loss: str = "auto"  # auto (liger on CUDA when installed, else chunked) | chunked | liger | plain
    loss_chunk_tokens: int = 4096  # tokens per chunk of the chunked cross-entropy
    eval_steps: int | None = None  # None: evaluate once at the end (when there is an evaluation set)
    resume_check: bool = True  # refuse a checkpoint or output_dir of another run (mode, data, model, hyperparameters)
    push_to_hub: bool = False  # TrainingArguments.push_to_hub (the final save is pushed)
    hub_model_id: str | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)  # any other TrainingArguments field, checked by name

    def __post_init__(self) -> None:
        # `{mode}` in output_dir becomes the mode, so the baseline of a config never shares its Multiverse folder
        object.__setattr__(self, "output_dir", self.output_dir.replace("{mode}", self.mode))


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        self._check_run_options()
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

    def _check_run_options(self) -> None:
        """Loss, evaluation and TrainingArguments passthrough keys."""
        check_choice("train.loss", self.train.loss, ("auto", "chunked", "liger", "plain"))
        if self.train.loss_chunk_tokens < 1:
            raise ConfigError(f"train.loss_chunk_tokens must be >= 1, got {self.train.loss_chunk_tokens}")
        if not 0.0 <= self.data.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in [0, 1), got {self.data.eval_fraction}")
        if self.data.eval_fraction and self.data.eval_split:
            raise ConfigError("set data.eval_fraction or data.eval_split, not both")
        if not isinstance(self.train.extra_args, dict):
            raise ConfigError("train.extra_args must be a mapping of TrainingArguments fields, "
                              f"got {self.train.extra_args!r}")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:  # type: ignore[assignment]
    """Read a YAML file (or start from defaults when path is None) and apply `section.key=value` overrides."""
    return load(Config, path, overrides)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
