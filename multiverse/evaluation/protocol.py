"""The evaluation protocol as one frozen config, and its presets.

`paper` is the Multiverse paper's protocol: avg@16 at temperature 0.6 and top-p 0.95, the budget counted on the
critical path (SamplingParams.max_critical_tokens, SPEC §6), the parallel suffix on every question.
A preset sets defaults; any flag given on the command line wins over it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

PARALLEL_SUFFIX = "Think step by step and in parallel before answering."
SEQUENTIAL_SUFFIX = "Think step by step before answering."  # the trainer's autoregressive suffix
TOTAL_CAP = 4  # with a critical-path budget B and no --max-new-tokens, the cost cap is TOTAL_CAP * B


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 1  # generations per question: avg@samples, pass@k, cons@samples
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 4096  # tokens generated over all branches (cost)
    max_critical_tokens: int | None = None  # positions along the critical path (latency)
    suffix: str | None = None  # appended to every question ("" for none; None: the task's own, else fallback_suffix)
    fallback_suffix: str = PARALLEL_SUFFIX  # when neither the protocol nor the task names a suffix
    system_prompt: str | None = None  # a system message before the question (plain prompts: a paragraph before it)
    chat: bool = True  # apply the model's chat template when it has one
    seed: int = 0  # base of every per-sample seed (records.sample_seed)
    batch_size: int = 8
    controls: dict[str, Any] = field(default_factory=dict)  # engine/controls.py: every control, defaults filled in

    def __post_init__(self) -> None:
        from engine import controls

        object.__setattr__(self, "controls", controls.check({**controls.DEFAULTS, **self.controls}))
        checks = [
            (self.samples >= 1, "samples must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.max_critical_tokens is None or self.max_critical_tokens >= 1, "max_critical_tokens must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def with_budget(self, budget: int, kind: str) -> "EvalConfig":
        """This protocol at one budget: `critical` caps the critical path (cost cap TOTAL_CAP x), `total` the tokens."""
        if kind == "critical":
            return replace(self, max_critical_tokens=budget, max_new_tokens=TOTAL_CAP * budget)
        if kind == "total":
            return replace(self, max_new_tokens=budget, max_critical_tokens=None)
        raise ValueError(f"budget kind {kind!r}: choose critical or total")


def baseline_protocol(config: EvalConfig, suffix: str | None) -> EvalConfig:
    """The autoregressive baseline's protocol: `suffix` (--baseline-suffix) when given; else the model's suffix when
    it chose one other than the parallel suffix; else the task's own suffix (remainders: none, as the twin was
    trained), and SEQUENTIAL_SUFFIX only where the task has none (the counterpart of the parallel suffix)."""
    if suffix is None and config.suffix is not None and config.suffix != PARALLEL_SUFFIX:
        suffix = config.suffix
    return replace(config, suffix=suffix, fallback_suffix=SEQUENTIAL_SUFFIX)


PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "paper": {"samples": 16, "temperature": 0.6, "top_p": 0.95, "max_critical_tokens": 32768,
              "max_new_tokens": TOTAL_CAP * 32768, "suffix": PARALLEL_SUFFIX},
}


def resolve(preset: str, given: dict[str, Any]) -> EvalConfig:
    """Defaults < preset < flags given explicitly (None = not given)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}
    if given.get("max_critical_tokens") is not None and given.get("max_new_tokens") is None:
        values["max_new_tokens"] = TOTAL_CAP * values["max_critical_tokens"]
    return EvalConfig(**values)


def parse_budgets(spec: str) -> list[int]:
    """"1024,2048,4096" -> [1024, 2048, 4096]: positive, distinct, increasing (given in any order)."""
    try:
        values = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"--budgets {spec}: comma-separated integers, e.g. 1024,2048,4096") from err
    if not values or min(values) < 1:
        raise ValueError(f"--budgets {spec}: every budget must be a positive integer")
    if len(set(values)) != len(values):
        raise ValueError(f"--budgets {spec}: a budget is repeated")
    return sorted(values)
