"""The model seam: one attention function registered with transformers' AttentionInterface.

The HF layer computes q/k/v and applies RoPE with the positions the engine passed as `position_ids`; then it
calls this function. Per layer, it first writes the step's new K/V into the pool (every token's slot), then each
row (one branch) attends its own new tokens over its block table. Because all writes precede all reads in a layer,
a row may read slots written by another row in the same forward (a child reading its parent's `</Goal>`, a parent
reading its children's last `</Path>` at merge). Called without `mv_batch` (outside the engine) it is plain SDPA.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

SEAM_NAME = "multiverse_paged"


@dataclass(frozen=True)
class StepMeta:
    """Tensors shared by all layers of one forward. T new tokens in B rows, padded to Qmax queries, Kmax keys."""

    k: torch.Tensor  # [layers, Hkv, slots, D] pool storage
    v: torch.Tensor
    write_slots: torch.Tensor  # [T] slot of each new token
    key_slots: torch.Tensor | None  # [B, Kmax] each row's block table, padded with slot 0
    q_index: torch.Tensor | None  # [B, Qmax] index into the T new tokens (padding repeats a real one)
    mask: torch.Tensor | None  # [B, 1, Qmax, Kmax] True = may attend (table entries up to the query itself)
    out_index: torch.Tensor | None  # [T] row-major index of each real query in [B * Qmax]
    # Decode fast path: every row has exactly one new token (T == B), so q_index/out_index are None;
    # mask is None too when every row reads its whole (unpadded) table.
    key_range: tuple[int, int] | None = None  # one row whose table is slots [lo, hi): read a slice, no gather


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
    if meta.key_range is not None:  # one row, its table is a slice: queries stay [1, H, T, D]
        lo, hi = meta.key_range
        t = key.shape[2]  # the new tokens are the last t slots of the slice
        k_cache[:, hi - t : hi] = key[0]
        v_cache[:, hi - t : hi] = value[0]
        keys, values = k_cache[None, :, lo:hi], v_cache[None, :, lo:hi]  # [1, Hkv, K, D], views
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=meta.mask, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2), None
    k_cache.index_copy_(1, meta.write_slots, key[0])
    v_cache.index_copy_(1, meta.write_slots, value[0])
    rows, k_max = meta.key_slots.shape
    flat = meta.key_slots.reshape(-1)  # index_select is several times faster than 2-D advanced indexing on CPU
    kv_heads, dim_kv = k_cache.shape[0], k_cache.shape[2]
    keys = k_cache.index_select(1, flat).view(kv_heads, rows, k_max, dim_kv).transpose(0, 1)  # [B, Hkv, Kmax, D]
    values = v_cache.index_select(1, flat).view(kv_heads, rows, k_max, dim_kv).transpose(0, 1)
    heads, dim = query.shape[1], query.shape[3]
    if meta.q_index is None:  # decode: row b's only query is new token b
        q = query[0].transpose(0, 1).unsqueeze(2)  # [B, H, 1, D]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=meta.mask, scale=scaling, enable_gqa=True)
        return out.reshape(1, -1, heads, dim), None
    q = query[0].index_select(1, meta.q_index.reshape(-1)).view(heads, rows, -1, dim).transpose(0, 1)  # [B, H, Qmax, D]
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=meta.mask, scale=scaling, enable_gqa=True)
    out = out.transpose(1, 2).reshape(-1, heads, dim)[meta.out_index]  # [T, H, D]
    return out.unsqueeze(0), None


def register() -> str:
    """Register the seam (idempotent); returns the implementation name to put in the model config."""
    AttentionInterface.register(SEAM_NAME, paged_attention)
    return SEAM_NAME
