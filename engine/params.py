"""SamplingParams: everything a request asks for (decoding, budgets, stops, structure limits).

Every field is type- and range-checked at construction, so a bad value fails where it is written, with its
name and value, and never inside an engine step where it could harm other requests. Checks that need the
model (top_k and stop ids within the vocabulary) run in `MultiverseLM.submit`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from engine import controls

# A logits processor gets the branch's visible token ids (read-only) and its logits [vocab]; returns logits.
LogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]

MAX_SEED = 2**63 - 1
MAX_INT = 2**31 - 1  # budgets and top_k above this are nonsense for any model (and stay inside int64)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; `temperature=0` (the default, as in `multiverse generate`) is greedy.

    Budgets (SPEC §6): `max_new_tokens` counts sampled tokens over all branches (cost);
    `max_critical_tokens` counts positions along the critical path (latency). Stops: `stop` strings and
    `stop_token_ids` end the request when the root writes them and close the path when a path writes them.
    `top_k`: 0 or -1 = off, else 1..vocab. `seed`: an int in 0..2**63-1, or None for a fresh random one.
    """

    max_new_tokens: int = 512  # the defaults are `multiverse generate`'s: 512 tokens, greedy
    max_critical_tokens: int | None = None
    temperature: float = 0.0
    top_k: int = 0  # 0 or -1: off
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
    parallel: bool = True  # False: never fork while decoding (the prompt keeps the Multiverse layout)
    # Decoding controls (engine/controls.py has the table); every one is off by default.
    fork_threshold: float | None = None  # a drawn <Parallel> stays only when its probability is >= this
    fork_bias: float = 0.0  # added to the <Parallel> logit
    max_concurrent_paths: int | None = None  # paths of one block decoding at once (exact)
    path_rule: str | None = None  # "factor": the concurrency from the outlines' confidences (exact)
    path_factor: float | None = None  # f of the factor rule
    structure: str = "free"  # "constrained": tokens that break the structure are masked
    merge: str = "reuse"  # "refresh": joined paths re-encoded causally before <Conclusion>

    def __post_init__(self) -> None:
        _int("max_new_tokens", self.max_new_tokens, 1, MAX_INT)
        _int("max_critical_tokens", self.max_critical_tokens, 1, MAX_INT, optional=True)
        _int("top_k", self.top_k, -1, MAX_INT)
        _int("seed", self.seed, 0, MAX_SEED, optional=True)
        _int("max_paths", self.max_paths, 1, MAX_INT, optional=True)
        _int("max_depth", self.max_depth, 1, MAX_INT, optional=True)
        self._set("temperature", _real("temperature", self.temperature, lambda x: x >= 0, ">= 0"))
        self._set("top_p", _real("top_p", self.top_p, lambda x: 0 < x <= 1, "in (0, 1]"))
        for name in ("ignore_eos", "include_stop_str_in_output", "logprobs", "parallel"):
            if not isinstance(getattr(self, name), bool):
                raise _error(name, getattr(self, name), "must be True or False", TypeError)
        stop = (self.stop,) if isinstance(self.stop, str) else _sequence("stop", self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise _error("stop", self.stop, "must be a string or a list of non-empty strings")
        self._set("stop", stop)
        ids = _sequence("stop_token_ids", self.stop_token_ids)
        for i, t in enumerate(ids):
            _int(f"stop_token_ids[{i}]", t, 0, MAX_INT)
        self._set("stop_token_ids", ids)
        processors = _sequence("logits_processors", self.logits_processors)
        if not all(callable(p) for p in processors):
            raise _error("logits_processors", self.logits_processors, "must hold callables", TypeError)
        self._set("logits_processors", processors)
        for name, value in controls.check({n: getattr(self, n) for n in controls.NAMES}).items():
            self._set(name, value)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def check_vocab(self, vocab_size: int) -> None:
        """The checks that need the model: top_k and stop ids within the vocabulary."""
        if self.top_k > vocab_size:
            raise _error("top_k", self.top_k, f"must be at most the vocabulary size {vocab_size} (0 or -1: off)")
        for i, t in enumerate(self.stop_token_ids):
            if t >= vocab_size:
                raise _error(f"stop_token_ids[{i}]", t, f"is not in the vocabulary (size {vocab_size})")


def _error(name: str, value: Any, rule: str, kind: type[Exception] = ValueError) -> Exception:
    return kind(f"SamplingParams.{name} {rule}, got {value!r}")


def _int(name: str, value: Any, lo: int, hi: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(name, value, "must be an integer" + (" or None" if optional else ""), TypeError)
    if not lo <= value <= hi:
        raise _error(name, value, f"must be in {lo}..{hi}")


def _real(name: str, value: Any, ok: Callable[[float], bool], rule: str) -> float:
    return controls.real(name, value, ok, f"finite and {rule}", ValueError)


def _sequence(name: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _error(name, value, "must be a list or tuple", TypeError)
    return tuple(value)
