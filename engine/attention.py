"""The model seam: one attention function registered with transformers' AttentionInterface.

The HF layer computes q/k/v and applies RoPE with the positions the engine passed as `position_ids`; then it
calls this function. Per layer, it first writes the step's new K/V into the pool (every token's slot), then each
group of rows attends its own new tokens over its block tables. Because all writes precede all reads in a layer,
a row may read slots written by another row in the same forward (a child reading its parent's `</Goal>`, a parent
reading its children's last `</Path>` at merge). Called without `mv_batch` (outside the engine) it is plain SDPA.

Rows are grouped by their number of new tokens q and the power-of-two class of their key count (runner.py orders
the step's tokens group by group), so no query is ever padded: decode rows attend in one call per class, a
prefill chunk of q tokens in its own, and a decode row never waits for a prefill's length. Only keys are padded,
to the longest table of a group (less than twice its shortest), and masked.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from engine import shared_prefix

SEAM_NAME = "multiverse_paged"


@dataclass(frozen=True)
class RowGroup:
    """B rows with q new tokens each; their tokens are the step's tokens [start, start + B * q), row-major."""

    start: int
    rows: int
    q: int
    key_slots: torch.Tensor | None  # [B, Kmax] each row's block table (up to its last new token), padded
    mask: torch.Tensor | None  # [B, 1, q, Kmax] True = may attend; None: every query sees its whole table
    key_range: tuple[int, int] | None = None  # one row whose table is pool slots [lo, hi): a slice, no gather
    prefix: "shared_prefix.Prefix | None" = None  # decode rows that all start with these slots: key_slots/mask are
    # the suffixes after them, [B, S] and [B, S] additive (engine/shared_prefix.py)


@dataclass(frozen=True)
class StepMeta:
    """Tensors shared by all layers of one forward over T new tokens."""

    k: torch.Tensor  # [layers, Hkv, slots, D] pool storage
    v: torch.Tensor
    write_slots: torch.Tensor  # [T] slot of each new token
    groups: tuple[RowGroup, ...]  # cover [0, T) in order


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, H, T, D], RoPE applied
    key: torch.Tensor,  # [1, Hkv, T, D], RoPE applied
    value: torch.Tensor,  # [1, Hkv, T, D]
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    meta: StepMeta | None = kwargs.pop("mv_batch", None)
    if meta is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    layer = module.layer_idx
    k_cache, v_cache = meta.k[layer], meta.v[layer]  # [Hkv, slots, D]
    first = meta.groups[0]
    if len(meta.groups) == 1 and first.key_range is not None:  # one row, its new tokens end its slice
        hi, t = first.key_range[1], key.shape[2]
        k_cache[:, hi - t : hi] = key[0]
        v_cache[:, hi - t : hi] = value[0]
    else:
        k_cache.index_copy_(1, meta.write_slots, key[0])
        v_cache.index_copy_(1, meta.write_slots, value[0])
    outs = [_attend(group, query, k_cache, v_cache, scaling) for group in meta.groups]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # [T, H, D]
    return out.unsqueeze(0), None


def _attend(
    group: RowGroup, query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, scaling: float | None
) -> torch.Tensor:
    """One SDPA call for a group: [B * q, H, D] outputs in the group's token order."""
    heads, dim = query.shape[1], query.shape[3]
    b, q = group.rows, group.q
    if group.prefix is not None:  # q == 1
        rows = query[0, :, group.start : group.start + b].transpose(0, 1)  # [B, H, D]
        scale = dim**-0.5 if scaling is None else scaling
        return shared_prefix.attend(rows, k_cache, v_cache, group.prefix, group.key_slots, group.mask, scale)
    qs = query[0, :, group.start : group.start + b * q].view(heads, b, q, dim).transpose(0, 1)  # [B, H, q, D]
    if group.key_range is not None:
        lo, hi = group.key_range
        keys, values = k_cache[None, :, lo:hi], v_cache[None, :, lo:hi]  # [1, Hkv, K, D], views
    else:
        k_max = group.key_slots.shape[1]
        flat = group.key_slots.reshape(-1)  # index_select is several times faster than 2-D indexing on CPU
        kv_heads, dim_kv = k_cache.shape[0], k_cache.shape[2]
        keys = k_cache.index_select(1, flat).view(kv_heads, b, k_max, dim_kv).transpose(0, 1)  # [B, Hkv, Kmax, D]
        values = v_cache.index_select(1, flat).view(kv_heads, b, k_max, dim_kv).transpose(0, 1)
    out = F.scaled_dot_product_attention(qs, keys, values, attn_mask=group.mask, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).reshape(b * q, heads, dim)


def register() -> str:
    """Register the seam (idempotent); returns the implementation name to put in the model config."""
    AttentionInterface.register(SEAM_NAME, paged_attention)
    return SEAM_NAME
