"""How many KV pages the engine gets: sized at start-up from the machine's memory, as vLLM and SGLang do.

The rule (engine/README.md, "KV memory"):
    pages = kv_memory_fraction x (available - activation headroom) / (bytes per token x page_size)
    at most max_running x context tokens (the model's max_position_embeddings)
- available: what is free once the weights are loaded: free device memory on CUDA (torch.cuda.mem_get_info),
  free RAM elsewhere (psutil's `available`, lowered to a cgroup v2 limit when the process has one);
- bytes per token = layers x KV heads x head dim x 2 (K and V) x dtype size, from the model's config;
- kv_memory_fraction defaults to 0.9 on CUDA (the device serves this engine, as vLLM's gpu_memory_utilization and
  SGLang's mem_fraction_static assume) and 0.25 of RAM elsewhere (RAM is shared with the OS, the tokenizer, data
  loading, a second engine and other programs; three quarters stay theirs);
- the cap: more pages than max_running requests at full context could only be used by forked requests that all
  fill their context at once; it keeps a small model on a large machine from claiming GiBs it never touches.
An explicit `num_pages` wins over the rule; a size that cannot fit in the available memory is refused.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLIs import this module for its flags, before torch loads
    import torch

    from engine.config import EngineConfig

GiB = 1 << 30
DEFAULT_FRACTION = {"cuda": 0.9, "cpu": 0.25}  # of available memory; other devices count as "cpu" (RAM)
MIN_HEADROOM = 256 << 20  # bytes kept for one forward's activations at least (allocator slack included)


@dataclass(frozen=True)
class KVPlan:
    """The pool's size and how it was chosen (the start-up line, /metrics and refusals read it)."""

    num_pages: int
    page_size: int
    reserve_pages: int
    bytes_per_token: int
    rule: str  # how num_pages was chosen, in words
    raise_with: str  # the option(s) that give a larger pool

    @property
    def tokens(self) -> int:
        return self.num_pages * self.page_size

    @property
    def nbytes(self) -> int:
        return self.tokens * self.bytes_per_token

    @property
    def max_request_tokens(self) -> int:
        """The longest request (prompt + every token of every branch) the pool can hold: all but the reserve."""
        return (self.num_pages - self.reserve_pages) * self.page_size

    def describe(self) -> str:
        return (
            f"KV cache: {self.num_pages:,} pages x {self.page_size} tokens = {self.tokens:,} tokens, "
            f"{self.nbytes / GiB:.2f} GiB ({self.bytes_per_token:,} bytes/token); largest request "
            f"{self.max_request_tokens:,} tokens; {self.rule}"
        )

    def refusal(self, prompt_tokens: int) -> str | None:
        """Why a prompt of this length can never run (it would wait forever), or None when it fits."""
        if prompt_tokens <= self.max_request_tokens:
            return None
        return (
            f"{prompt_tokens:,} tokens can never fit in the KV cache: it holds {self.max_request_tokens:,} tokens per "
            f"request ({self.num_pages:,} pages x {self.page_size}, {self.reserve_pages} kept in reserve); "
            f"raise {self.raise_with}"
        )


def bytes_per_token(model_config: Any, dtype: torch.dtype) -> int:
    """KV bytes one token costs: layers x KV heads x head dim x 2 (K and V) x dtype size."""
    layers, kv_heads, head_dim = kv_shape(model_config)
    return layers * kv_heads * head_dim * 2 * dtype.itemsize


def kv_shape(model_config: Any) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a HF config (its text config for multimodal ones)."""
    mc = model_config.get_text_config()
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    kv_heads = getattr(mc, "num_key_value_heads", None) or mc.num_attention_heads
    return mc.num_hidden_layers, kv_heads, head_dim


def activation_headroom(model_config: Any, config: EngineConfig, dtype: torch.dtype) -> int:
    """Bytes kept out of the KV budget for one forward (an estimate, at least MIN_HEADROOM): for each of
    max_batch_tokens tokens its hidden states, q/k/v and the MLP's gate/up/product; fp32 logits, softmax and
    sampling copies for max_running rows."""
    mc = model_config.get_text_config()
    hidden = mc.hidden_size
    inner = getattr(mc, "intermediate_size", None) or 4 * hidden
    per_token = (6 * hidden + 3 * inner) * dtype.itemsize
    logits = config.max_running * getattr(mc, "vocab_size", 0) * 4 * 3
    from engine.config import DEVICE_BATCH_TOKENS  # config.py imports this module

    tokens = config.max_batch_tokens or max(DEVICE_BATCH_TOKENS.values())  # not yet resolved for a device: the largest
    return max(MIN_HEADROOM, tokens * per_token + logits)


def available_memory(device: torch.device) -> int:
    """Bytes free now: device memory on CUDA, else RAM (lowered to the cgroup's limit where one is set)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    import psutil

    free = psutil.virtual_memory().available
    limit = cgroup_room()
    return free if limit is None else min(free, limit)


CGROUP_ENV = "MULTIVERSE_CGROUP_DIR"  # the cgroup v2 folder whose memory.max/current bound this process, if not found


def cgroup_dir() -> Path | None:
    """The cgroup v2 folder to read: $MULTIVERSE_CGROUP_DIR when set, else where the kernel mounted the cgroup2
    file system (psutil's mount table; in a container that mount is the container's own cgroup); None without one
    (macOS, Windows, cgroup v1 only)."""
    if os.environ.get(CGROUP_ENV):
        return Path(os.environ[CGROUP_ENV])
    import psutil

    mounts = [p.mountpoint for p in psutil.disk_partitions(all=True) if p.fstype == "cgroup2"]
    return Path(mounts[0]) if mounts else None


def cgroup_room(root: Path | None = None) -> int | None:
    """memory.max - memory.current of the cgroup v2 at `root` (default: cgroup_dir()); None without a limit or
    without the interface."""
    root = cgroup_dir() if root is None else root
    if root is None:
        return None
    try:
        limit = (root / "memory.max").read_text().strip()
        current = int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - current)


def plan_kv(
    model_config: Any, dtype: torch.dtype, config: EngineConfig, device: torch.device, available: int | None = None
) -> KVPlan:
    """The pool for this model, config and device. `available` (bytes free once the weights are loaded) is
    measured when None. Raises ConfigError (a ValueError) when an explicit num_pages, or the smallest usable pool, does not fit."""
    from multiverse.config_io import ConfigError

    per_token = bytes_per_token(model_config, dtype)
    page_bytes = per_token * config.page_size
    headroom = activation_headroom(model_config, config, dtype)
    available = available_memory(device) if available is None else available
    usable = max(0, available - headroom)
    where = f"{available / GiB:.2f} GiB free on {device.type} after the weights, less {headroom / GiB:.2f} GiB for activations"
    plan = dict(page_size=config.page_size, reserve_pages=config.reserve_pages, bytes_per_token=per_token)
    if config.num_pages is not None:  # explicit: it wins over the fraction, but must fit at all
        need = config.num_pages * page_bytes
        if need > usable:
            raise ConfigError(
                f"engine option num_pages={config.num_pages:,} needs {need / GiB:.2f} GiB of KV "
                f"(pages of {config.page_size} tokens x {per_token:,} bytes per token), more than the memory allows ({where}); "
                "lower num_pages (--num-pages), or leave it unset to size the pool from kv_memory_fraction"
            )
        return KVPlan(config.num_pages, rule="num_pages set", raise_with="num_pages (--num-pages)", **plan)
    fraction = config.kv_memory_fraction or DEFAULT_FRACTION.get(device.type, DEFAULT_FRACTION["cpu"])
    pages = int(fraction * usable) // page_bytes
    rule = f"kv_memory_fraction {fraction:g} of {where}"
    raise_with = "kv_memory_fraction (--kv-memory-fraction) or set num_pages (--num-pages)"
    context = getattr(model_config.get_text_config(), "max_position_embeddings", None)
    if context and pages * config.page_size > config.max_running * context:
        pages = math.ceil(config.max_running * context / config.page_size)
        rule += f", capped at max_running {config.max_running} x context {context:,}"
        raise_with = "num_pages (--num-pages) or max_running (--max-running)"
    if pages <= config.reserve_pages:
        raise ConfigError(
            f"the KV cache would get {pages} pages of {config.page_size} tokens ({rule}), no more than the "
            f"{config.reserve_pages} kept in reserve: raise kv_memory_fraction, free memory, or set num_pages"
        )
    return KVPlan(pages, rule=rule, raise_with=raise_with, **plan)


def add_kv_arguments(parser: Any) -> None:
    """`--num-pages` and `--kv-memory-fraction` for the CLIs (generate, serve, eval)."""
    parser.add_argument("--num-pages", type=int, default=None,
                        help="KV pool pages (an explicit size wins; default: computed from --kv-memory-fraction)")
    parser.add_argument("--kv-memory-fraction", type=float, default=None,
                        help="share of the memory free after the weights that the KV pool takes "
                        "(default: 0.9 on CUDA, 0.25 of RAM on CPU; at most max_running x context tokens)")


def kv_options(args: Any) -> dict[str, Any]:
    """The engine options of those flags, checked (a UsageError names the flag); unset flags are left out."""
    from multiverse.errors import UsageError, check_at_least

    check_at_least("--num-pages", args.num_pages, 2)
    fraction = args.kv_memory_fraction
    if fraction is not None and not 0 < fraction <= 1:
        raise UsageError(f"--kv-memory-fraction {fraction}: must lie in (0, 1]")
    return {k: v for k, v in (("num_pages", args.num_pages), ("kv_memory_fraction", fraction)) if v is not None}
