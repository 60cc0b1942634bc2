"""Sequence packing: consecutive samples share one row of at most `block_size` tokens.

Greedy and order-preserving (the curriculum order survives): a sample goes into the current row when it fits,
else it starts a new row. Each row carries doc ids from `multiverse.attention.pack`, so the collator's layout
restarts positions per document and hides other documents. Labels are concatenated unchanged; the collator
ignores the first token of every document.
"""
from __future__ import annotations

from multiverse.attention import pack

Sample = dict[str, list[int]]


def group(samples: list[Sample], block_size: int) -> list[list[Sample]]:
    """Consecutive samples grouped into rows whose total length is <= block_size."""
    rows: list[list[Sample]] = []
    used = block_size + 1  # forces a new row for the first sample
    for s in samples:
        n = len(s["input_ids"])
        if n > block_size:
            raise ValueError(f"a sample of {n} tokens exceeds block_size {block_size}; truncate before packing")
        if used + n > block_size:
            rows.append([])
            used = 0
        rows[-1].append(s)
        used += n
    return rows


def pack_samples(samples: list[Sample], block_size: int) -> list[Sample]:
    """Packed rows {"input_ids", "labels", "doc_ids"}."""
    out = []
    for row in group(samples, block_size):
        ids, docs = pack([s["input_ids"] for s in row])
        labels = [t for s in row for t in s["labels"]]
        out.append({"input_ids": ids, "labels": labels, "doc_ids": docs})
    return out
