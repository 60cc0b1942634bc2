"""The engine's one frozen configuration, built once in MultiverseLM and passed down unchanged."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch


DEVICE_BATCH_TOKENS = {"cuda": 2048, "cpu": 96}  # the step budget when none is given; other devices: cuda's


@dataclass(frozen=True)
class EngineConfig:
    """Memory, batching and structure limits of one engine instance.

    KV memory is `num_pages * page_size` token slots per layer; `num_pages` None sizes it at start-up from
    `kv_memory_fraction` of the memory left after the weights (engine/kv_memory.py has the rule). A request is
    admitted only while `reserve_pages` stay free after its prompt, so running requests have room to fork and decode.
    """

    num_pages: int | None = None  # None: computed from kv_memory_fraction; an explicit size wins
    kv_memory_fraction: float | None = None  # share of free memory for KV; None: 0.9 on CUDA, 0.25 of RAM on CPU
    page_size: int = 16
    max_batch_tokens: int | None = None  # tokens one step computes: decodes first, then prompt chunks (chunking.py);
    # None: DEVICE_BATCH_TOKENS of the device (a chunk of a long prompt then costs a few decode steps, not hundreds)
    max_running: int = 64  # requests decoding at the same time
    reserve_pages: int = 4
    admission_skip_limit: int = 16  # times younger requests may be admitted past one that does not fit yet
    parallel: bool = True  # False: the sequential baseline, tags are ordinary tokens
    max_paths: int | None = None  # default limits of SPEC §6; SamplingParams may tighten them per request
    max_depth: int | None = None
    device: str | None = None  # None: the model's device
    dtype: torch.dtype | None = None  # None: the model's dtype
    shared_prefix_slots: int | None = 512  # decode paths read their common prefix once when that saves at least
    # this many slot copies, (paths - 1) x prefix (engine/shared_prefix.py); None: every path gathers its table
    check_integrity: bool = False  # assert the KV accounting after every step (tests)
    step_delay_s: float = 0.0  # test-only: sleep this long before each forward (a slowed engine; serve: $MULTIVERSE_STEP_DELAY_S)

    def __post_init__(self) -> None:
        for name in ("num_pages", "page_size", "max_batch_tokens", "max_running"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")
        fraction = self.kv_memory_fraction
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError(f"EngineConfig.kv_memory_fraction must be in (0, 1], got {fraction}")
        if self.admission_skip_limit < 0:
            raise ValueError(f"EngineConfig.admission_skip_limit must be >= 0, got {self.admission_skip_limit}")
        if self.reserve_pages < 0 or (self.num_pages is not None and self.reserve_pages >= self.num_pages):
            raise ValueError(f"EngineConfig.reserve_pages must be in [0, num_pages), got {self.reserve_pages}")
        if not 0 <= self.step_delay_s < 60:
            raise ValueError(f"EngineConfig.step_delay_s must be in [0, 60) seconds, got {self.step_delay_s}")
        for name in ("max_paths", "max_depth", "shared_prefix_slots"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"EngineConfig.{name} must be None or >= 1, got {value}")

    def for_device(self, device: torch.device) -> "EngineConfig":
        """This config with the device's step budget filled in when none was given."""
        if self.max_batch_tokens is not None:
            return self
        return replace(self, max_batch_tokens=DEVICE_BATCH_TOKENS.get(device.type, DEVICE_BATCH_TOKENS["cuda"]))

    @classmethod
    def from_options(cls, **options: Any) -> "EngineConfig":
        """Build from MultiverseLM(**engine_options) through the typed config layer: values are coerced to the
        field types ("64" -> 64), a bad value is a ConfigError (a ValueError) naming it, an unknown key a TypeError."""
        import difflib

        from multiverse.config_io import build

        known = [f.name for f in fields(cls)]
        for key in options:  # an unexpected keyword stays a TypeError, as for any Python call
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise TypeError(f"unknown engine option {key!r}{hint}; known: {', '.join(known)}")
        dtype = options.pop("dtype", None)  # a torch.dtype: no schema to coerce it with
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f"engine option dtype must be a torch.dtype, got {dtype!r}")
        return replace(build(cls, options, "engine options"), dtype=dtype)
