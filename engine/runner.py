"""The model runner: turns the step's rows (branches with pending tokens) into ONE forward of the HF model.

Ownership: the scheduler decides the rows; the runner builds flat tensors [1, T] (ids, explicit positions) and
the StepMeta the seam reads, runs the base model with the seam active, and applies the LM head only at the
last pending token of the rows that sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.attention import StepMeta, register
from engine.branch import Branch
from engine.kv_pool import KVPool


class ModelRunner:
    def __init__(self, model: torch.nn.Module, pool: KVPool, device: torch.device) -> None:
        self.model, self.pool, self.device = model, pool, device
        self.base = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.seam = register()

    @torch.inference_mode()
    def forward(self, rows: Sequence[Branch], sample: Sequence[bool]) -> torch.Tensor:
        """Compute every row's pending tokens; returns float32 logits [num sampling rows, vocab]."""
        ids, pos, write, last = [], [], [], []
        for branch in rows:
            n = len(branch.pending_ids)
            ids += branch.pending_ids
            pos += branch.pending_pos
            write += branch.slots[-n:]
            last.append(len(ids) - 1)
        meta = self._meta(rows, write)
        as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.device)  # noqa: E731
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = self.seam
        try:
            hidden = self.base(
                input_ids=as_tensor(ids)[None], position_ids=as_tensor(pos)[None], use_cache=False, mv_batch=meta
            ).last_hidden_state[0]  # [T, hidden]
        finally:
            config._attn_implementation = previous
        if len(last) == len(ids) and all(sample):  # decode: every token is a row's last and samples
            return self.lm_head(hidden).float()
        picks = as_tensor([i for i, s in zip(last, sample) if s])
        return self.lm_head(hidden[picks]).float()

    def _meta(self, rows: Sequence[Branch], write: list[int]) -> StepMeta:
        dev = self.device
        write_slots = torch.tensor(write, dtype=torch.long, device=dev)
        if len(rows) == 1 and rows[0].contiguous:  # one sequence in one run of slots: causal over a slice
            lo, hi = rows[0].slots[0], rows[0].slots[-1] + 1
            causal = None if len(write) == 1 else self._causal(len(write), hi - lo)
            if rows[0].prefill_mask is not None:
                causal = rows[0].prefill_mask.to(dev)[None, None]
            return StepMeta(
                self.pool.k, self.pool.v, write_slots, key_slots=None, q_index=None, mask=causal, out_index=None, key_range=(lo, hi)
            )
        q_lens = [len(b.pending_ids) for b in rows]
        k_lens = [len(b.slots) for b in rows]
        k_max = max(k_lens)
        if all(b.contiguous for b in rows):  # each table is one run of slots: no per-row list conversion
            starts = torch.tensor([b.slots[0] for b in rows], device=dev)
            last = self.pool.k.shape[2] - 1  # padding past a row's end is masked; keep it a valid slot
            table = (starts[:, None] + torch.arange(k_max, device=dev)[None, :]).clamp_(max=last)
        else:
            tables = [b.table() for b in rows]
            if min(k_lens) == k_max:  # the paths of one fork advance together: equal lengths, nothing to pad
                table = torch.stack(tables).to(dev)
            else:
                table = torch.nn.utils.rnn.pad_sequence(tables, batch_first=True).to(dev)  # pad: slot 0
        pool_kv = dict(k=self.pool.k, v=self.pool.v, key_slots=table)
        if max(q_lens) == 1:  # decode: one query per row, it sees its whole table
            mask = None
            if min(k_lens) != k_max:
                mask = (torch.arange(k_max)[None, :] < torch.tensor(k_lens)[:, None])[:, None, None].to(dev)
            return StepMeta(write_slots=write_slots, q_index=None, mask=mask, out_index=None, **pool_kv)
        q_len = torch.tensor(q_lens, device=dev)
        k_len = torch.tensor(k_lens, device=dev)
        q_max = max(q_lens)
        starts = torch.cumsum(q_len, 0) - q_len  # [B] first new token of each row
        i = torch.arange(q_max, device=dev)
        last = torch.minimum(i[None, :], q_len[:, None] - 1)  # [B, Qmax] padding repeats the last query
        q_index = starts[:, None] + last
        limit = (k_len - q_len)[:, None] + 1 + last  # keys visible to each query: its table up to itself
        mask = torch.arange(k_max, device=dev)[None, None, :] < limit[:, :, None]  # [B, Qmax, Kmax]
        for r, branch in enumerate(rows):
            if branch.prefill_mask is not None:  # a structured prompt: its whole table is new this step
                n = k_lens[r]
                mask[r, :n, :n] = branch.prefill_mask.to(dev)
        real = (i[None, :] < q_len[:, None]).reshape(-1)
        out_index = torch.arange(len(rows) * q_max, device=dev)[real]
        return StepMeta(write_slots=write_slots, q_index=q_index, mask=mask[:, None], out_index=out_index, **pool_kv)

    def _causal(self, q: int, k: int) -> torch.Tensor:
        """[1, 1, q, k]: the last q keys are the queries themselves; each sees everything up to itself."""
        i = torch.arange(q, device=self.device)[:, None]
        return (torch.arange(k, device=self.device)[None, :] <= (k - q + i))[None, None]
