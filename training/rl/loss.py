"""The clipped, group-relative policy loss with an optional KL to the starting model.

Per action token t of rollout i (A_i its group advantage, old = the engine's log-prob):
    ratio   = exp(logp - old)
    pg      = -min(ratio * A_i, clip(ratio, 1 - clip_low, 1 + clip_high) * A_i)
    kl      = exp(ref - logp) - (ref - logp) - 1            (k3 estimator; >= 0, unbiased for KL(pi || ref))
    loss    = sum over action tokens of (pg + beta * kl) / number of action tokens in the micro-batch
Tokens that are not actions are multiplied out before the sum, so their gradient is exactly 0.
"""
from __future__ import annotations

import torch

from training.rl.config import PolicyConfig


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, actions: torch.Tensor,
                cfg: PolicyConfig, ref_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """logp, old_logp, actions, ref_logp: [B, T]; advantages: [B]. Returns (scalar loss, statistics)."""
    mask = actions.to(logp.dtype)
    n = mask.sum().clamp(min=1.0)
    ratio = torch.exp(logp - old_logp.to(logp)) * mask + (1 - mask)  # 1 off the actions (no overflow there)
    a = advantages.to(logp)[:, None]
    clipped = torch.clamp(ratio, 1 - cfg.clip_low, 1 + cfg.clip_high)
    per_token = -torch.minimum(ratio * a, clipped * a)
    stats = {"clip_fraction": float(((ratio != clipped) & actions).sum() / n)}
    if ref_logp is not None:
        kl = k3(logp, ref_logp.to(logp))
        stats["kl"] = float((kl.detach() * mask).sum() / n)
        if cfg.kl > 0:
            per_token = per_token + cfg.kl * kl
    return (per_token * mask).sum() / n, stats
