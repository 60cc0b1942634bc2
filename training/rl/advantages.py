"""Group-relative advantages: each rollout's reward against the other rollouts of its question.

    rewards [G, K] (G questions, K rollouts each) -> advantages [G, K]
    normalized (GRPO):   (r - mean_g) / (std_g + eps), std over the group's K rewards (population: divide by K)
    centered (P-GRPO):   r - mean_g
A group whose rollouts all got the same reward has advantage 0 everywhere: it teaches nothing.
"""
from __future__ import annotations

import torch

EPS = 1e-6


def group_advantages(rewards: torch.Tensor, mode: str = "normalized", eps: float = EPS) -> torch.Tensor:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [groups, samples], got shape {tuple(rewards.shape)}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if mode == "centered":
        return centered
    if mode != "normalized":
        raise ValueError(f"advantage mode must be normalized or centered, got {mode!r}")
    return centered / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
