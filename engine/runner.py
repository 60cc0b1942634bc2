"""The model runner: turns the step's rows (branches with pending tokens) into ONE forward of the HF model.

Ownership: the scheduler decides the rows and how many of each row's pending tokens run now (all of them, or
the first `n` of a prompt being prefilled in chunks); the runner builds flat tensors [1, T] (ids, explicit
positions) and the StepMeta the seam reads, runs the base model with the seam active, and applies the LM head
only at the last computed token of the rows that sample.

Token order: rows are grouped by their number of new tokens q and the power-of-two class of their key count (a
stable sort, so a group keeps the scheduler's order), and the seam runs one attention call per group: a decode
row is never padded to a prefill's length, and short rows are not padded to a long row's keys (at most 2x).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from engine import shared_prefix
from engine.attention import RowGroup, StepMeta, register
from engine.branch import Branch
from engine.kv_pool import KVPool


class ModelRunner:
    def __init__(
        self, model: torch.nn.Module, pool: KVPool, device: torch.device, shared_prefix_slots: int | None = None
    ) -> None:
        self.model, self.pool, self.device = model, pool, device
        self.shared_prefix_slots = shared_prefix_slots  # None: decode rows always gather their whole tables
        self.base = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.seam = register()

    @torch.inference_mode()
    def forward(self, rows: Sequence[Branch], counts: Sequence[int], sample: Sequence[bool]) -> torch.Tensor:
        """Compute the first counts[i] pending tokens of every row; returns float32 logits
        [number of sampling rows, vocab] at each sampling row's last computed token, in `rows` order."""
        keys = [(n, (b.num_computed + n).bit_length()) for b, n in zip(rows, counts)]  # (queries, key-length class)
        order = sorted(range(len(rows)), key=lambda i: keys[i])  # stable: a group keeps the scheduler's order
        ids, pos, write, groups, last = [], [], [], [], [0] * len(rows)
        start = 0
        while start < len(order):
            end = start
            while end < len(order) and keys[order[end]] == keys[order[start]]:
                end += 1
            q = counts[order[start]]
            members = [rows[i] for i in order[start:end]]
            groups.append(self._group(members, q, len(ids)))
            for i, branch in zip(order[start:end], members):
                done = branch.num_computed  # tokens whose KV exists; the q new ones follow
                ids += branch.pending_ids[:q]
                pos += branch.pending_pos[:q]
                write += branch.slots[done : done + q]
                last[i] = len(ids) - 1
            start = end
        meta = StepMeta(self.pool.k, self.pool.v, self._tensor(write), tuple(groups))
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = self.seam
        try:
            hidden = self.base(
                input_ids=self._tensor(ids)[None], position_ids=self._tensor(pos)[None], use_cache=False, mv_batch=meta
            ).last_hidden_state[0]  # [T, hidden]
        finally:
            config._attn_implementation = previous
        picks = [last[i] for i in range(len(rows)) if sample[i]]
        if picks == list(range(len(ids))):  # decode: every token is a sampling row's last, in order
            return self.lm_head(hidden).float()
        return self.lm_head(hidden[self._tensor(picks)]).float()

    def _tensor(self, xs: list[int]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.long, device=self.device)

    def _group(self, rows: list[Branch], q: int, start: int) -> RowGroup:
        """Rows with q new tokens each: their tables up to the last new token, and who sees what."""
        dev = self.device
        k_lens = [b.num_computed + q for b in rows]  # keys of each row this step
        k_max = max(k_lens)
        if len(rows) == 1 and rows[0].contiguous:  # one run of slots: causal over a slice, no gather
            lo = rows[0].slots[0]
            mask = None if q == 1 else self._causal(q, k_max)
            if rows[0].prefill_mask is not None:
                mask = rows[0].prefill_mask[k_max - q : k_max, :k_max].to(dev)[None, None]
            return RowGroup(start, 1, q, None, self._additive(mask), key_range=(lo, rows[0].slots[k_max - 1] + 1))
        decode_paths = q == 1 and len(rows) > 1 and all(b.prefill_mask is None for b in rows)
        if self.shared_prefix_slots is not None and decode_paths:
            shared = self._shared_prefix_group(rows, k_lens, start)
            if shared is not None:
                return shared
        if all(b.contiguous for b in rows):  # each table is one run of slots: no per-row list conversion
            starts = torch.tensor([b.slots[0] for b in rows], device=dev)
            last = self.pool.k.shape[2] - 1  # padding past a row's end is masked; keep it a valid slot
            table = (starts[:, None] + torch.arange(k_max, device=dev)[None, :]).clamp_(max=last)
        else:
            tables = [b.table()[:n] for b, n in zip(rows, k_lens)]
            if min(k_lens) == k_max:  # the paths of one fork advance together: equal lengths, nothing to pad
                table = torch.stack(tables).to(dev)
            else:
                table = torch.nn.utils.rnn.pad_sequence(tables, batch_first=True).to(dev)  # pad: slot 0
        if q == 1 and min(k_lens) == k_max and all(b.prefill_mask is None for b in rows):
            return RowGroup(start, len(rows), 1, table, None)  # decode: each query sees its whole table
        k_len = torch.tensor(k_lens, device=dev)
        i = torch.arange(q, device=dev)
        limit = (k_len - q)[:, None] + 1 + i[None, :]  # [B, q] keys visible to each query: its table up to itself
        mask = torch.arange(k_max, device=dev)[None, None, :] < limit[:, :, None]  # [B, q, Kmax]
        for r, branch in enumerate(rows):
            if branch.prefill_mask is not None:  # a structured prompt: its table is the prompt (core layout)
                n = k_lens[r]
                mask[r, :, :n] = branch.prefill_mask[n - q : n, :n].to(dev)
        return RowGroup(start, len(rows), q, table, self._additive(mask[:, None]))

    def _shared_prefix_group(self, rows: list[Branch], k_lens: list[int], start: int) -> RowGroup | None:
        """Decode rows whose tables start with the same slots (the paths of a fork): that prefix is read once."""
        shared = [b.num_shared for b in rows]
        if not shared_prefix.saves_enough(shared, self.shared_prefix_slots):  # before any table is built
            return None
        tables = [b.table()[:n] for b, n in zip(rows, k_lens)]
        found = shared_prefix.common_prefix(tables, shared, self.shared_prefix_slots)
        if found is None:
            return None
        n = shared_prefix.prefix_length(found)
        if not isinstance(found, tuple):
            found = found.to(self.device)
        suffixes = [t[n:] for t in tables]  # each holds at least the row's new token (k_len > num_shared)
        lengths = [len(t) for t in suffixes]
        mask = None
        if min(lengths) == max(lengths):
            table = torch.stack(suffixes).to(self.device)
        else:
            table = torch.nn.utils.rnn.pad_sequence(suffixes, batch_first=True).to(self.device)
            ends = torch.tensor(lengths, device=self.device)[:, None]
            real = torch.arange(max(lengths), device=self.device)[None, :] < ends  # [B, S] not padding
            mask = self._additive(real)
        return RowGroup(start, len(rows), 1, table, mask, prefix=found)

    def _additive(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """A bool mask as 0 / -inf in the KV dtype, once per step: SDPA would convert it in every layer."""
        if mask is None:
            return None
        dtype = self.pool.k.dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))

    def _causal(self, q: int, k: int) -> torch.Tensor:
        """[1, 1, q, k]: the last q keys are the queries themselves; each sees everything up to itself."""
        i = torch.arange(q, device=self.device)[:, None]
        return (torch.arange(k, device=self.device)[None, :] <= (k - q + i))[None, None]
