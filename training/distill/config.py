"""The self-distillation stage's configuration (`multiverse train --stage distill --config FILE.yaml`).

Sections: `model` (the model round 1 samples from), `data` (questions with answers), `sampling` (K completions
per question), `reward` (only `answer_prefix` matters: where a kept completion's trace ends and its answer
begins), `distill` (rounds, folder, seed) and `sft`: a complete `multiverse train` config (training/config.py)
for each round's fine-tune, whose `model.name_or_path`, `data.multiverse` and `train.output_dir` every round
fills in (the previous round's model, its kept rows, OUT/round-N/model). Full weights, or LoRA with sft.model.lora.r.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from multiverse.config_io import ConfigError, check_at_least, check_choice, load
from training.config import Config, ModelConfig
from training.judge import RewardConfig
from training.rollouts import SamplingConfig, TaskConfig, check_sources


@dataclass(frozen=True)
class RoundsConfig:
    rounds: int = 1  # sample -> keep -> fine-tune, each round from the previous round's model
    output_dir: str = "runs/distill"  # round-N/kept.jsonl, round-N/summary.json, round-N/model/
    seed: int = 0  # rollout seeds: (seed, round, question, sample)
    batch_questions: int = 32  # questions per generate call (x sampling.samples requests)
    fresh_questions: bool = False  # round n samples rows [(n-1) x data.limit, n x data.limit) of data.tasks, not
    # the same first data.limit rows every round (later rounds learn from questions no earlier round saw)
    replay: bool = False  # round n fine-tunes on the kept rows of rounds 1..n (round-N/replay.jsonl), not only its own
    workers: int = 1  # processes that sample a round, each with its own engine on a contiguous share of the
    # questions; rollouts are seeded per question and sample, so the kept rows do not depend on it
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig options of the sampling engine


@dataclass(frozen=True)
class DistillConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: TaskConfig = field(default_factory=TaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    distill: RoundsConfig = field(default_factory=RoundsConfig)
    sft: Config = field(default_factory=Config)

    def validate(self) -> "DistillConfig":
        check_sources(self.model.name_or_path, self.data, "round 1 samples from")
        check_choice("reward.steps", self.reward.steps, ("none", "remainders"))
        check_at_least(self, ("distill.rounds", "distill.batch_questions", "distill.workers", "sampling.samples"), 1)
        if self.distill.fresh_questions:
            if self.data.limit is None:
                raise ConfigError("distill.fresh_questions needs data.limit (the questions of each round)", "data.limit")
            _check_fresh_rows(self.data.tasks, self.distill.rounds * self.data.limit)
        if self.sft.train.mode != "multiverse":
            raise ConfigError("sft.train.mode must be multiverse (the kept rows are Multiverse traces)", "sft.train.mode")
        self.round_sft(1, "MODEL", "ROWS.jsonl")  # every other sft key is checked now, not after sampling
        return self

    def round_questions(self, n: int) -> tuple[TaskConfig, int]:
        """(task config to load, rows to skip) of round n: the first data.limit rows, or with fresh_questions the
        n-th slice of data.limit rows."""
        if not self.distill.fresh_questions or self.data.limit is None:  # validate() pairs the two
            return self.data, 0
        return dataclasses.replace(self.data, limit=n * self.data.limit), (n - 1) * self.data.limit

    def round_sft(self, n: int, model: str, rows: str) -> Config:
        """The fine-tune of round n: sft with the round's model, rows and output folder, validated."""
        s = self.sft
        cfg = dataclasses.replace(
            s, model=dataclasses.replace(s.model, name_or_path=model),
            data=dataclasses.replace(s.data, multiverse=rows, autoregressive=None, mixing="multiverse_only"),
            train=dataclasses.replace(s.train, output_dir=f"{self.distill.output_dir}/round-{n}/model"))
        try:
            return cfg.validate()
        except ConfigError as e:
            raise ConfigError(f"sft: {e}", f"sft.{e.key}" if e.key else None) from None


def _check_fresh_rows(tasks: str, needed: int) -> None:
    """Refuse, before any sampling, a fresh-questions run whose task file is too short for its last round (a file
    that an earlier stage writes is checked by the round that reads it)."""
    if not os.path.isfile(tasks):
        return
    with open(tasks, encoding="utf-8") as f:
        rows = sum(1 for line in f if line.strip())
    if rows < needed:
        raise ConfigError(f"{tasks} has {rows} rows; distill.fresh_questions needs distill.rounds x data.limit = "
                          f"{needed}", "distill.fresh_questions")


def load_distill_config(path: str | None, overrides: list[str] = ()) -> DistillConfig:  # type: ignore[assignment]
    return load(DistillConfig, path, overrides)
