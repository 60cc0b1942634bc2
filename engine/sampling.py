"""Token choice per branch: processors, greedy / temperature / top-k / top-p, and raw logprobs.

Randomness comes only from the branch's own torch.Generator (seeded from the request seed and the branch
label), one uniform draw per sampled token, so a request's output does not depend on what else is batched.
Logprobs are read from the log-softmax of the model's unmodified logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.branch import Branch
from engine.params import SamplingParams


def sample(logits: torch.Tensor, branches: Sequence[Branch], params: Sequence[SamplingParams]) -> tuple[list[int], list[float]]:
    """logits [S, V] float32, one row per sampling branch -> (token ids, their raw logprobs)."""
    raw_logp = torch.log_softmax(logits, dim=-1)
    work = logits
    if any(p.logits_processors for p in params):
        work = logits.clone()
        for r, (branch, p) in enumerate(zip(branches, params)):
            for processor in p.logits_processors:
                work[r] = processor(branch.visible, work[r])
    tokens = work.argmax(dim=-1)
    for r, (branch, p) in enumerate(zip(branches, params)):
        if not p.greedy:
            tokens[r] = _draw(work[r], p, branch.generator)
    chosen = raw_logp.gather(1, tokens[:, None])[:, 0]
    return tokens.tolist(), chosen.tolist()


def _draw(row: torch.Tensor, p: SamplingParams, generator: torch.Generator) -> int:
    """One token from softmax(row / T) restricted to top-k and the top-p nucleus; inverse-CDF with one uniform."""
    u = float(torch.rand((), generator=generator))
    x = row / p.temperature
    if p.top_k and p.top_k < x.numel():
        kth = torch.topk(x, p.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if not torch.isfinite(probs).all():
        return int(row.argmax())
    if p.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, 0) - sorted_p  # mass strictly above each token
        sorted_p = sorted_p.masked_fill(before >= p.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    cdf = torch.cumsum(probs, 0)
    target = torch.tensor([u * float(cdf[-1])], dtype=cdf.dtype, device=cdf.device)
    index = int(torch.searchsorted(cdf, target, right=True).clamp(max=cdf.numel() - 1))
    while probs[index] == 0 and index > 0:  # never land on an excluded token at a float boundary
        index -= 1
    return index
