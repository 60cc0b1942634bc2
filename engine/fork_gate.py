"""Confidence-gated forking (Fast-dLLM's threshold rule, arXiv 2505.22618, at branch level).

`fork_bias` b is added to the `<Parallel>` logit before anything is drawn. When a row draws `<Parallel>` (a fork
proposal) and its `fork_threshold` tau is set, the proposal is kept only if p(<Parallel>) >= tau under the
row's distribution at temperature 1 (processors and bias applied); otherwise `<Parallel>` is masked and the row
draws again with the same uniform, i.e. from the distribution with `<Parallel>` removed. Every proposal is
counted, so a request reports its fork acceptance rate (kept / proposed; 1.0 without a threshold).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.params import SamplingParams


def add_bias(work: torch.Tensor, logits: torch.Tensor, params: Sequence[SamplingParams], parallel_id: int | None) -> torch.Tensor:
    """work [S, V] with each row's fork_bias added at <Parallel> (a copy when work is still the model's logits)."""
    rows = [r for r, p in enumerate(params) if p.fork_bias != 0.0]
    if parallel_id is None or not rows:
        return work
    if work is logits:
        work = logits.clone()
    work[rows, parallel_id] += torch.tensor([params[r].fork_bias for r in rows], dtype=work.dtype, device=work.device)
    return work


def judge(work: torch.Tensor, tokens: list[int], params: Sequence[SamplingParams], parallel_id: int | None) -> dict[int, bool]:
    """For each row that drew <Parallel>: kept (True) or vetoed by its threshold (False)."""
    if parallel_id is None:
        return {}
    out = {}
    for r, token in enumerate(tokens):
        if token != parallel_id:
            continue
        tau = params[r].fork_threshold
        out[r] = tau is None or float(torch.softmax(work[r].float(), dim=-1)[parallel_id]) >= tau
    return out
