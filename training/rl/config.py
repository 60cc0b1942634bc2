"""The RL stage's configuration (`multiverse train --stage rl --config FILE.yaml`): frozen dataclasses, typed.

Sections: `model` and `train` are the SFT ones (training/config.py: the same keys, checkpoints, resume and
fingerprint rules; `train.micro_batch_size` counts questions, each bringing `sampling.samples` rollouts),
`data` names the questions, `sampling` how rollouts are drawn, `reward` its parts, `policy` the objective.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multiverse.config_io import ConfigError, check_at_least, check_choice, load
from training.config import ModelConfig, TrainConfig
from training.judge import RewardConfig
from training.rollouts import SamplingConfig, TaskConfig, check_sources


@dataclass(frozen=True)
class PolicyConfig:
    """The clipped, group-normalized objective (GRPO; P-GRPO with advantage: centered)."""

    advantage: str = "normalized"  # normalized: (r - mean) / (std + eps) per group | centered: r - mean
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.2
    kl: float = 0.0  # > 0: k3 KL to the starting model (loaded once more, frozen) in the loss, with this weight
    track_kl: bool = True  # log that KL even when kl = 0 (a second copy of the model in memory; off for big models)
    backend: str = "native"  # rollouts: the native engine around the model being trained
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig options of that engine (num_pages, ...)


@dataclass(frozen=True)
class RLConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: TaskConfig = field(default_factory=TaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "RLConfig":
        check_sources(self.model.name_or_path, self.data, "RL starts from")
        check_choice("reward.steps", self.reward.steps, ("none", "remainders"))
        check_choice("policy.advantage", self.policy.advantage, ("normalized", "centered"))
        check_choice("policy.backend", self.policy.backend, ("native",))  # SGLang: training/README.md, at scale
        check_choice("train.mode", self.train.mode, ("multiverse",))
        check_at_least(self, ("sampling.samples", "sampling.max_new_tokens", "train.micro_batch_size",
                              "train.grad_accum"), 1)
        check_at_least(self, ("policy.clip_low", "policy.clip_high", "policy.kl"), 0)
        if self.model.lora.r > 0:
            raise ConfigError("model.lora: the RL stage trains full weights (the engine decodes the model itself)",
                              "model.lora.r")
        if not 0 < self.sampling.temperature:
            raise ConfigError("sampling.temperature must be > 0 (RL samples)", "sampling.temperature")
        if self.sampling.fork_bias != 0:
            raise ConfigError("sampling.fork_bias must be 0 in RL: a biased draw is not the policy's, so the clipped "
                              "ratio would be off-policy (use it in self-distillation)", "sampling.fork_bias")
        return self


def load_rl_config(path: str | None, overrides: list[str] = ()) -> RLConfig:  # type: ignore[assignment]
    return load(RLConfig, path, overrides)
