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
    drawn = [r for r, p in enumerate(params) if not p.greedy]
    if drawn:
        tokens[drawn] = _draw([work[r] for r in drawn], [params[r] for r in drawn], [branches[r].generator for r in drawn])
    chosen = raw_logp.gather(1, tokens[:, None])[:, 0]
    return tokens.tolist(), chosen.tolist()


def _draw(rows: list[torch.Tensor], params: list[SamplingParams], generators: list[torch.Generator]) -> torch.Tensor:
    """Tokens from softmax(row / T) cut to the top-k and then the top-p nucleus, by inverse CDF with one uniform
    per row from that row's generator. Batched over rows; each row's result depends only on its own row."""
    x = torch.stack(rows)  # [R, V]
    n, vocab = x.shape
    dev = x.device
    x = x / torch.tensor([p.temperature for p in params], dtype=x.dtype, device=dev)[:, None]
    sorted_x, order = torch.sort(x, dim=-1, descending=True, stable=True)
    rank = torch.arange(vocab, device=dev)[None, :]
    top_k = torch.tensor([p.top_k or vocab for p in params], device=dev)[:, None]
    probs = torch.softmax(sorted_x.masked_fill(rank >= top_k, float("-inf")), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
    top_p = torch.tensor([p.top_p for p in params], dtype=probs.dtype, device=dev)[:, None]
    probs = probs.masked_fill(before >= top_p, 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.tensor([float(torch.rand((), generator=g)) for g in generators], dtype=cdf.dtype, device=dev)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=vocab - 1)
    tokens = order.gather(1, pick)[:, 0]
    broken = ~torch.isfinite(cdf[:, -1]) | (cdf[:, -1] <= 0)  # e.g. every logit -inf: fall back to argmax
    return torch.where(broken, x.argmax(dim=-1), tokens)
