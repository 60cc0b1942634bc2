"""FlexAttention BlockMask from Layout metadata, without ever materialising an L x L tensor.

For query q and key block K = [ks, ke), the number of keys of K that q sees is
    |K ∩ [doc_start(q), q]|  -  sum_d |K ∩ [hidden_lo(q, d), hidden_hi(q, d))|
because the hidden ranges are disjoint and lie inside [doc_start(q), q). A (query block, key block) pair is
"full" when every query of the block sees all |K| keys, "empty" when none sees any, "partial" otherwise
(mask_mod decides per element). Work is chunked over queries: peak extra memory is
O(chunk * L / block_size + (L / block_size)^2) integers, never O(L^2).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn.attention.flex_attention import BlockMask

from multiverse.attention.layout import Ids, Layout, layout

_Q_CHUNK = 4096  # queries per chunk of the visible-count table [chunk, nK]


def _overlap(lo: torch.Tensor, hi: torch.Tensor, ks: torch.Tensor, ke: torch.Tensor) -> torch.Tensor:
    """|[lo, hi) ∩ [ks, ke)| for lo/hi [C, 1] and ks/ke [nK] -> [C, nK]."""
    return (torch.minimum(hi, ke) - torch.maximum(lo, ks)).clamp_(min=0)


def block_tables(lay: Layout, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(full [nQ, nK], partial [nQ, nK]) bool tables of one row."""
    L = lay.length
    n = (L + block_size - 1) // block_size
    ks = torch.arange(n) * block_size
    ke = (ks + block_size).clamp(max=L)
    size = ke - ks  # [nK]
    lo_min = torch.full((n, n), torch.iinfo(torch.int32).max, dtype=torch.int32)
    hi_max = torch.zeros((n, n), dtype=torch.int32)
    chunk = max(1, _Q_CHUNK // block_size) * block_size  # whole query blocks per chunk
    for start in range(0, L, chunk):
        stop = min(start + chunk, L)
        q = torch.arange(start, stop)[:, None]
        seen = _overlap(lay.doc_start[start:stop, None], q + 1, ks, ke)  # [C, nK]
        for d in range(lay.hidden_lo.shape[1]):
            seen -= _overlap(lay.hidden_lo[start:stop, d, None], lay.hidden_hi[start:stop, d, None], ks, ke)
        _reduce_rows(seen.to(torch.int32), start, block_size, lo_min, hi_max)
    full = lo_min == size.to(torch.int32)[None, :]
    partial = (hi_max > 0) & ~full
    return full, partial


def _reduce_rows(seen: torch.Tensor, start: int, bs: int, lo_min: torch.Tensor, hi_max: torch.Tensor) -> None:
    """Fold per-query counts [C, nK] (C whole query blocks, the last maybe short) into per-block min / max."""
    c, n = seen.shape
    blocks = (c + bs - 1) // bs
    first = start // bs
    pad = blocks * bs - c
    lo_rows = torch.cat([seen, seen.new_full((pad, n), torch.iinfo(torch.int32).max)]) if pad else seen
    hi_rows = torch.cat([seen, seen.new_zeros(pad, n)]) if pad else seen
    lo_min[first : first + blocks] = lo_rows.view(blocks, bs, n).amin(dim=1)
    hi_max[first : first + blocks] = hi_rows.view(blocks, bs, n).amax(dim=1)


def _to_indices(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [..., nQ, nK] -> (counts [..., nQ], column indices [..., nQ, nK] with the True ones first)."""
    counts = table.sum(dim=-1, dtype=torch.int32)
    order = torch.argsort((~table).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return counts, order


def _mask_mod(doc: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> Any:
    """The element rule over metadata tensors doc [B, L], lo/hi [B, L, D]."""
    depth = lo.shape[-1]

    def mask_mod(b: Any, h: Any, q: Any, k: Any) -> Any:
        visible = (k <= q) & (doc[b, q] == doc[b, k])
        for d in range(depth):
            visible = visible & ~((k >= lo[b, q, d]) & (k < hi[b, q, d]))
        return visible

    return mask_mod


def block_mask(
    input_ids: Ids,
    tokenizer: Any,
    doc_ids: Ids | None = None,
    block_size: int = 128,
    device: str | torch.device | None = None,
    **kw: Any,
) -> BlockMask:
    """Multiverse Attention as a FlexAttention BlockMask for ids [L] (batch 1) or [B, L] (one per row)."""
    rows = _rows(input_ids)
    docs = _rows(doc_ids) if doc_ids is not None else [None] * len(rows)
    lays = [layout(r, tokenizer, d, **kw) for r, d in zip(rows, docs)]
    return block_mask_from_layouts(lays, block_size, device)


def block_mask_from_layouts(
    lays: Sequence[Layout], block_size: int = 128, device: str | torch.device | None = None
) -> BlockMask:
    """One BlockMask (batch = len(lays), heads broadcast) from layouts of equal length."""
    lengths = {lay.length for lay in lays}
    if len(lengths) != 1:
        raise ValueError(f"rows of a batch must have one length, got {sorted(lengths)}")
    (L,) = lengths
    tables = [block_tables(lay, block_size) for lay in lays]
    full = torch.stack([t[0] for t in tables])[:, None]  # [B, 1, nQ, nK]
    partial = torch.stack([t[1] for t in tables])[:, None]
    depth = max(lay.hidden_lo.shape[1] for lay in lays)
    doc = torch.stack([lay.doc_ids for lay in lays]).to(device)
    lo = torch.stack([_pad_depth(lay.hidden_lo, depth) for lay in lays]).to(device)
    hi = torch.stack([_pad_depth(lay.hidden_hi, depth) for lay in lays]).to(device)
    kv_num, kv_idx = (x.to(device) for x in _to_indices(partial))
    full_num, full_idx = (x.to(device) for x in _to_indices(full))
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=_mask_mod(doc, lo, hi), seq_lengths=(L, L)
    )


def skipped_fraction(mask: BlockMask) -> float:
    """Fraction of (query block, key block) pairs the kernel skips entirely."""
    n_q, n_k = mask.kv_indices.shape[-2], mask.kv_indices.shape[-1]
    computed = mask.kv_num_blocks.sum() + (mask.full_kv_num_blocks.sum() if mask.full_kv_num_blocks is not None else 0)
    total = mask.kv_num_blocks.numel() * n_k
    return 1.0 - float(computed) / float(total) if n_q and total else 0.0


def _pad_depth(t: torch.Tensor, depth: int) -> torch.Tensor:
    if t.shape[1] == depth:
        return t
    return torch.cat([t, t.new_zeros(t.shape[0], depth - t.shape[1])], dim=1)


def _rows(ids: Ids) -> list[Ids]:
    if isinstance(ids, torch.Tensor) and ids.dim() == 2:
        return list(ids)
    if not isinstance(ids, torch.Tensor) and len(ids) and not isinstance(ids[0], int):
        return list(ids)  # a list of rows
    return [ids]
