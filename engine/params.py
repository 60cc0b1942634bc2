"""SamplingParams: everything a request asks for (decoding, budgets, stops, structure limits)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

# A logits processor gets the branch's visible token ids (read-only) and its logits [vocab]; returns logits.
LogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; `temperature=0` is greedy.

    Budgets (SPEC §6): `max_new_tokens` counts sampled tokens over all branches (cost);
    `max_critical_tokens` counts positions along the critical path (latency). Stops: `stop` strings and
    `stop_token_ids` end the request when the root writes them and close the path when a path writes them.
    """

    max_new_tokens: int = 256
    max_critical_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random seed per request (recorded in the result)
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: bool = False
    logits_processors: Sequence[LogitsProcessor] = field(default_factory=tuple)
    max_paths: int | None = None  # tighter than the engine's limit, for this request only
    max_depth: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.max_critical_tokens is None or self.max_critical_tokens >= 1, "max_critical_tokens must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop must hold non-empty strings"),
            (all(callable(p) for p in self.logits_processors), "logits_processors must be callables"),
            (self.max_paths is None or self.max_paths >= 1, "max_paths must be None or >= 1"),
            (self.max_depth is None or self.max_depth >= 1, "max_depth must be None or >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SamplingParams: {message}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
