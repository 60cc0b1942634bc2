"""Mask construction cost: our O(L) block mask vs our dense bool mask vs a reference-style dense float32 mask.

Each (method, L) runs in a fresh subprocess (after a small warm-up build) on the same synthetic nested sequence; peak extra memory is the
rise of the process's resident high-water mark (benchmarks/peak_memory.py: reset at the region's start on Linux) over its resident
size just before the build. Prints ONE JSON line.

    python benchmarks/masks.py [--lengths 4096 16384 32768] [--skip-reference-above 32768]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.peak_memory import PeakMemory  # noqa: E402

METHODS = ("block_mask", "dense_mask", "reference_float32")


def synthetic_ids(length: int, tokenizer: object) -> list[int]:
    from multiverse.encode import encode_trace
    from multiverse.synthetic import SyntheticShape, synthetic_trace

    ids: list[int] = []
    seed = 0
    while len(ids) < length:
        ids += encode_trace(synthetic_trace(seed, 4, SyntheticShape(max_depth=3)), tokenizer)
        seed += 1
    return ids[:length]


def reference_float32(ids: list[int], tokenizer: object) -> torch.Tensor:
    """The reference's recipe: bool causal L x L, sibling path spans blanked pairwise, then a float32 additive mask."""
    from multiverse.tags import TagIds

    t = TagIds.from_tokenizer(tokenizer)
    L = len(ids)
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))
    blocks: list[list[tuple[int, int]]] = []
    opened: list[int] = []
    for i, tok in enumerate(ids):  # a Python loop over tokens, like the reference
        if tok == t.parallel_open:
            blocks.append([])
        elif tok == t.path_open:
            opened.append(i)
        elif tok == t.path_close and opened and blocks:
            blocks[-1].append((opened.pop(), i))
        elif tok == t.parallel_close and blocks:
            spans = blocks.pop()
            for a in range(len(spans)):
                for b in range(len(spans)):
                    if a != b:
                        rows = torch.arange(spans[a][0], spans[a][1] + 1)
                        cols = torch.arange(spans[b][0], spans[b][1] + 1)
                        allowed[rows[:, None], cols[None, :]] = False
    mask = torch.full_like(allowed, 0.0, dtype=torch.float32)
    return mask.masked_fill(~allowed, float("-inf"))


def measure(method: str, length: int) -> dict[str, float]:
    from multiverse.attention import block_mask, dense_mask
    from multiverse.tiny import build_tokenizer

    tok = build_tokenizer()
    builders = {
        "block_mask": lambda x: block_mask(x, tok, block_size=128),
        "dense_mask": lambda x: dense_mask(x, tok),
        "reference_float32": lambda x: reference_float32(x, tok),
    }
    builders[method](synthetic_ids(1024, tok))  # warm-up: one-time kernel and thread-pool start-up excluded
    ids = synthetic_ids(length, tok)
    build = lambda: builders[method](ids)  # noqa: E731
    with PeakMemory() as mem:
        start = time.perf_counter()
        out = build()
        seconds = time.perf_counter() - start
    peak = mem.extra
    result = {"method": method, "L": length, "seconds": round(seconds, 3), "peak_extra_mib": round(peak / 2**20, 1)}
    if method == "block_mask":
        from multiverse.attention import skipped_fraction

        result["blocks_skipped"] = round(skipped_fraction(out), 4)
    del out
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--case", nargs=2, metavar=("METHOD", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case[0], int(args.case[1]))))
        return
    rows = []
    for length in args.lengths:
        for method in METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--case", method, str(length)], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{method:>18} L={length:>6}: {rows[-1]['seconds']:8.3f} s {rows[-1]['peak_extra_mib']:9.1f} MiB",
                  file=sys.stderr)
    print(json.dumps({"benchmark": "masks", "rows": rows}))


if __name__ == "__main__":
    main()
