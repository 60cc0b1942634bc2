"""Shared-prefix decode attention: the paths of a fork read their common prefix once, not once per path.

After a fork, every path's block table starts with the same slots (the prompt and the parent up to `</Goal>`);
only each path's own tokens differ. The gather in engine/attention.py copies a row's whole table, so a decode step
with B paths copies the shared prefix B times in every layer. Here the prefix is read once (a slice of the pool
when its slots are one run, as at batch 1; else one gather), every path's query meets it in one matmul, and only
the short own suffixes are gathered per row. One softmax runs over [prefix scores | suffix scores], so the result
is the same attention as the gathered one (up to float summation order); `gathered_reference` below is that
naive form, which tests compare against.

Used for decode groups (q = 1) of at least two rows whose tables share a prefix, when the copies it
saves, (rows - 1) x prefix slots, reach EngineConfig.shared_prefix_slots; every other group keeps the gather.
On this CPU the gather is cheaper below about 512 saved slots; the attention call alone is 5x faster at a 4K prefix
with 8 paths, a whole batch-1 decode 1.3x at 1K and 1.5x at 4K (benchmarks/prefix_once.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

Prefix = tuple[int, int] | torch.Tensor  # pool slots [lo, hi) read as a slice, or a [P] slot table gathered once


def common_prefix(tables: Sequence[torch.Tensor], shared: Sequence[int], min_saved: int) -> Prefix | None:
    """The slots every table starts with: (lo, hi) when they are one run lo, ..., hi - 1, else their [P] table;
    None when the rows share nothing or reading it once saves fewer than `min_saved` slot copies. `shared[i]` is
    row i's inherited length (Branch.num_shared), an upper bound on what rows share: running rows only ever share
    what a common ancestor had when it forked. The tables are compared, so a wrong bound costs speed, never
    correctness."""
    if not saves_enough(shared, min_saved):
        return None
    n = min(shared)
    first = tables[0][:n]
    if any(not torch.equal(t[:n], first) for t in tables[1:]):
        return None
    lo = int(first[0])
    if int(first[-1]) - lo == n - 1 and torch.equal(first, torch.arange(lo, lo + n, dtype=first.dtype)):
        return lo, lo + n
    return first


def saves_enough(shared: Sequence[int], min_saved: int) -> bool:
    """Whether rows with these inherited lengths could save `min_saved` slot copies by reading a prefix once:
    the cheap test, before any table is looked at."""
    return len(shared) > 1 and min(shared) > 0 and (len(shared) - 1) * min(shared) >= min_saved


def prefix_length(prefix: Prefix) -> int:
    return prefix[1] - prefix[0] if isinstance(prefix, tuple) else prefix.numel()


def attend(
    query: torch.Tensor,  # [B, H, D] one decode query per row
    k_cache: torch.Tensor,  # [Hkv, slots, D]
    v_cache: torch.Tensor,
    prefix: Prefix,  # every row's first P keys: a slice of the pool or a slot table
    suffix_slots: torch.Tensor,  # [B, S] each row's own keys after the prefix, padded
    suffix_mask: torch.Tensor | None,  # [B, S] additive: 0 for a real key, -inf for padding; None: no padding
    scale: float,
) -> torch.Tensor:
    """[B, H, D]: each row's query over prefix + its own suffix, one softmax over both."""
    b, heads, dim = query.shape
    kv_heads = k_cache.shape[0]
    g = heads // kv_heads  # query heads per KV head (GQA), consecutive as in HF's repeat_kv
    if isinstance(prefix, tuple):
        p_keys, p_values = k_cache[:, prefix[0] : prefix[1]], v_cache[:, prefix[0] : prefix[1]]  # views
    else:
        p_keys, p_values = k_cache.index_select(1, prefix), v_cache.index_select(1, prefix)  # one copy, not B
    p = p_keys.shape[1]
    s = suffix_slots.shape[1]
    # prefix: all rows' queries of one KV head against its prefix keys, [Hkv, g*B, P]
    q_heads = query.permute(1, 0, 2).reshape(kv_heads, g * b, dim)
    p_scores = torch.matmul(q_heads, p_keys.transpose(1, 2)).view(heads, b, p).transpose(0, 1)  # [B, H, P]
    # own suffixes: gathered, [B, Hkv, S, D]
    flat = suffix_slots.reshape(-1)
    keys = k_cache.index_select(1, flat).view(kv_heads, b, s, dim).transpose(0, 1)
    values = v_cache.index_select(1, flat).view(kv_heads, b, s, dim).transpose(0, 1)
    q_rows = query.view(b, kv_heads, g, dim)
    s_scores = torch.matmul(q_rows, keys.transpose(2, 3)).view(b, heads, s)  # [B, H, S]
    if suffix_mask is not None:
        s_scores = s_scores + suffix_mask[:, None, :]
    weights = torch.softmax(torch.cat([p_scores, s_scores], dim=2) * scale, dim=2)  # [B, H, P + S]
    p_w, s_w = weights[:, :, :p], weights[:, :, p:]
    out_p = torch.matmul(p_w.transpose(0, 1).reshape(kv_heads, g * b, p), p_values)  # [Hkv, g*B, D]
    out_p = out_p.view(heads, b, dim).transpose(0, 1)
    out_s = torch.matmul(s_w.view(b, kv_heads, g, s), values).view(b, heads, dim)
    return out_p + out_s


def gathered_reference(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: Sequence[torch.Tensor], scale: float
) -> torch.Tensor:
    """The naive form: each row gathers its whole table and attends alone. [B, H, D]."""
    outs = []
    g = query.shape[1] // k_cache.shape[0]
    for r, table in enumerate(tables):
        keys = k_cache[:, table].repeat_interleave(g, dim=0)  # [H, K, D]
        values = v_cache[:, table].repeat_interleave(g, dim=0)
        w = torch.softmax(torch.einsum("hd,hkd->hk", query[r], keys) * scale, dim=-1)
        outs.append(torch.einsum("hk,hkd->hd", w, values))
    return torch.stack(outs)
