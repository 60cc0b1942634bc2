"""The curator's configuration: frozen dataclasses read from one YAML file, plus `section.key=value` overrides.

Every key a file may hold is a field below; an unknown key is an error naming the key and the file.
Endpoint settings left empty fall back to the usual environment variables (OPENAI_BASE_URL, OPENAI_API_KEY,
OPENAI_MODEL), read once in `LLMConfig.resolved()`, never elsewhere.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiverse.config_io import ConfigError, build, check_at_least, check_choice, load


@dataclass(frozen=True)
class InputConfig:
    source: str = "simplescaling/s1K-1.1"  # a hub data set, or a local .jsonl / .json / .parquet file
    split: str = "train"
    limit: int | None = None  # keep the first N rows (smoke runs)
    id_field: str = "id"  # rows without it get "row-<index>"
    question_field: str = "question"
    trace_field: str = "deepseek_thinking_trajectory"


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/curate"
    wrap_think: bool = True  # wrap the parallel trace in <Think>...</Think> like Multiverse-1K
    save_dataset: bool = True  # also write a `datasets` data set to <dir>/dataset
    push_to_hub: str | None = None  # a hub repo id; pushed only when set
    private: bool = True


@dataclass(frozen=True)
class LLMConfig:
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else the OpenAI API
    api_key: str | None = None  # None: $OPENAI_API_KEY (prefer the variable; keys in files leak)
    model: str | None = None  # None: $OPENAI_MODEL
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 8192
    seed: int | None = None
    timeout: float = 600.0  # seconds per call
    structured_output: str = "json_schema"  # json_schema | json_object | none (the reply is validated anyway)
    extra_body: dict[str, Any] = field(default_factory=dict)  # passed through (e.g. vLLM's top_k)

    def resolved(self) -> "LLMConfig":
        """Fill empty endpoint fields from the environment; the one place that reads it."""
        model = self.model or os.environ.get("OPENAI_MODEL")
        if not model:
            raise ConfigError("llm.model is not set (set it in the config or export OPENAI_MODEL)")
        return dataclasses.replace(
            self,
            base_url=self.base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            model=model,
        )

    def sampling(self) -> dict[str, Any]:
        """The parameters that change a reply: part of the cache key and of every request."""
        out: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


@dataclass(frozen=True)
class RunConfig:
    concurrency: int = 16  # LLM calls in flight at once (also samples in progress)
    max_attempts: int = 4  # per stage: a stage whose reply or result fails is asked again up to this many times
    max_retries: int = 6  # per call: transport retries on 429, 5xx, timeouts and dropped connections
    backoff_initial: float = 1.0  # seconds; doubles per retry, with jitter
    backoff_max: float = 30.0
    progress: bool = True


@dataclass(frozen=True)
class ChecksConfig:
    max_distance: float = 0.2  # normalised edit distance between the sequential twin and the original
    max_block_distance: float = 0.5  # the same, per block, between its own original and rewritten sentences
    check_answer: bool = True
    sibling_openers: tuple[str, ...] = (
        "Alternatively", "Similarly", "Likewise", "Also", "Additionally", "On the other hand",
        "In contrast", "Meanwhile", "As before", "Again",
    )


@dataclass(frozen=True)
class GroupingConfig:
    max_paths: int = 8  # longer runs of independent steps are split into blocks of at most this many paths
    nested: bool = True  # group substeps into blocks nested inside paths


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    dir: str | None = None  # None: <output.dir>/cache


@dataclass(frozen=True)
class CurateConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    run: RunConfig = field(default_factory=RunConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    prompts_dir: str | None = None  # a folder with steps.yaml, dependencies.yaml, rewrite.yaml; None: built-ins
    tokenizer: str | None = "tiny"  # target tokenizer for the report's statistics (hub name or path);
    # "tiny": the built-in test tokenizer; None: no structure statistics in the report

    @property
    def out_dir(self) -> Path:
        return Path(self.output.dir)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.dir) if self.cache.dir else self.out_dir / "cache"

    def validate(self) -> "CurateConfig":
        check_choice("llm.structured_output", self.llm.structured_output, ("json_schema", "json_object", "none"))
        check_at_least(self, ("run.concurrency", "run.max_attempts", "grouping.max_paths"), 1)
        if self.grouping.max_paths < 2:
            raise ConfigError("grouping.max_paths must be >= 2 (a block has at least two paths)", "grouping.max_paths")
        if not 0.0 <= self.checks.max_distance <= 1.0:
            got = self.checks.max_distance
            raise ConfigError(f"checks.max_distance must lie in [0, 1], got {got}", "checks.max_distance")
        if self.run.max_retries < 0:
            raise ConfigError(f"run.max_retries must be >= 0, got {self.run.max_retries}", "run.max_retries")
        return self


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CurateConfig:
    """Read a YAML file (defaults when path is None) and apply `section.key=value` overrides."""
    return load(CurateConfig, path, overrides)


def from_dict(tree: dict[str, Any]) -> CurateConfig:
    """The same as load_config, from an in-memory mapping (the Python API)."""
    return build(CurateConfig, tree, "config").validate()
