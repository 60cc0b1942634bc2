"""FlexAttention BlockMask from Layout metadata, without ever materialising an L x L tensor.

For query q and key block K = [ks, ke), the number of keys of K that q sees is
    |K ∩ [doc_start(q), q]|  -  sum_d |K ∩ [hidden_lo(q, d), hidden_hi(q, d))|
because the hidden ranges are disjoint and lie inside [doc_start(q), q). A (query block, key block) pair is
"full" when every query of the block sees all |K| keys, "empty" when none sees any, "partial" otherwise
(mask_mod decides per element). Peak extra memory is
O(L + (runs + L / block_size) * L / block_size) integers, never O(L^2).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn.attention.flex_attention import BlockMask

from multiverse.attention.layout import Ids, Layout, layout

_BIG = torch.iinfo(torch.int32).max

def _overlap(lo: torch.Tensor, hi: torch.Tensor, ks: torch.Tensor, ke: torch.Tensor) -> torch.Tensor:
    """|[lo, hi) ∩ [ks, ke)| for lo/hi [R, 1] and ks/ke [nK] (or [R, 1]) -> [R, nK]."""
    return (torch.minimum(hi, ke) - torch.maximum(lo, ks)).clamp_(min=0)


def block_tables(lay: Layout, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(full [nQ, nK], partial [nQ, nK]) bool tables of one row.

    Below the diagonal (key block K entirely before query block Q) a query's count depends only on its
    metadata key (doc start, hidden ranges), which is constant along runs of tokens: one row per distinct
    (query block, run) pair suffices. The diagonal is computed per query; above it everything is empty.
    """
    L = lay.length
    n = (L + block_size - 1) // block_size
    ks = torch.arange(n, dtype=torch.int32) * block_size
    ke = (ks + block_size).clamp(max=L)
    key = torch.cat([lay.doc_start[:, None], lay.hidden_lo, lay.hidden_hi], dim=1).to(torch.int32)  # [L, 1+2D]
    new = torch.ones(L, dtype=torch.bool)
    new[1:] = (key[1:] != key[:-1]).any(dim=1)
    new[::block_size] = True
    reps = new.nonzero().squeeze(1)  # [P] first token of each (query block, run) pair
    qblock = reps // block_size
    counts = _counts(key[reps], ks, ke, torch.minimum(ks[qblock], ke[qblock])[:, None])  # [P, nK]
    rows = qblock[:, None].expand_as(counts)
    lo_min = torch.full((n, n), _BIG, dtype=torch.int32).scatter_reduce_(0, rows, counts, "amin")
    hi_max = torch.zeros((n, n), dtype=torch.int32).scatter_reduce_(0, rows, counts, "amax")
    diag_min, diag_max = _diagonal(key, ks, ke, block_size)
    upper = torch.ones(n, n, dtype=torch.bool).triu()
    lo_min.masked_fill_(upper, 0)
    hi_max.masked_fill_(upper, 0)
    lo_min.diagonal().copy_(diag_min)
    hi_max.diagonal().copy_(diag_max)
    full = lo_min == (ke - ks)[None, :]
    partial = (hi_max > 0) & ~full
    return full, partial


def _counts(key: torch.Tensor, ks: torch.Tensor, ke: torch.Tensor, upto: torch.Tensor) -> torch.Tensor:
    """Visible keys per key block for metadata rows key [R, 1+2D] seeing keys below `upto` [R, 1] -> [R, nK]."""
    depth = (key.shape[1] - 1) // 2
    seen = _overlap(key[:, :1], upto, ks, ke)
    for d in range(depth):
        seen -= _overlap(key[:, 1 + d : 2 + d], key[:, 1 + depth + d : 2 + depth + d], ks, ke)
    return seen


def _diagonal(key: torch.Tensor, ks: torch.Tensor, ke: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block, min and max over its queries of the keys seen in its own block -> [nQ], [nQ]."""
    L, n = key.shape[0], ks.numel()
    q = torch.arange(L, dtype=torch.int32)
    own = q // bs
    seen = _overlap(key[:, :1], (q + 1)[:, None], ks[own][:, None], ke[own][:, None])  # [L, 1]
    depth = (key.shape[1] - 1) // 2
    for d in range(depth):
        seen -= _overlap(key[:, 1 + d : 2 + d], key[:, 1 + depth + d : 2 + depth + d], ks[own][:, None], ke[own][:, None])
    seen = seen.squeeze(1)
    own = own.long()
    lo = torch.full((n,), _BIG, dtype=torch.int32).scatter_reduce_(0, own, seen, "amin")
    return lo, torch.zeros(n, dtype=torch.int32).scatter_reduce_(0, own, seen, "amax")


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
