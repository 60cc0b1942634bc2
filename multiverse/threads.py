"""How many torch intra-op threads a command uses: `--threads N`, else 1 for tiny models, else torch's default.

A tiny model is overhead-bound: a second intra-op thread only adds synchronisation, and on a loaded machine it can
make a decode step many times slower. The size is read from the safetensors headers (shapes only, no weights).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

TINY_PARAMS = 50_000_000  # below this many parameters a model gets one thread by default


def count_params(model_dir: str | Path) -> int | None:
    """Parameters in a local model directory's *.safetensors files; None when there are none to read."""
    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))  # header: little-endian u64 length, then JSON
            header = json.loads(fh.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def choose(requested: int | None, num_params: int | None) -> int | None:
    """The thread count to set; None = leave torch's default."""
    if requested is not None:
        return requested
    if num_params is not None and num_params < TINY_PARAMS:
        return 1
    return None


def apply(requested: int | None, num_params: int | None) -> int | None:
    """Set torch's intra-op threads as `choose` says; returns what was set (None = unchanged)."""
    n = choose(requested, num_params)
    if n is not None:
        import torch

        torch.set_num_threads(n)
    return n
