"""The policy's log-probs of rollouts: ONE teacher-forced forward with the core's mask and positions.

    rollouts -> MultiverseCollator (the SFT code path: multiverse.attention.layout masks and positions)
             -> model(input_ids, attention_mask, position_ids).logits [B, L, V]
             -> logp [B, L-1]: log-prob of token j+1 at position j, 0 where token j+1 is not an action

Token j+1 is an action when the engine sampled it (it reported a log-prob); the prompt, the forced
`<Path> LABEL:` / `<Conclusion>` tokens and the padding are not, and get no log-prob, no loss and no gradient.
SPEC §5 makes this forward reproduce the engine's distribution exactly, so the engine's own log-probs serve as
the old policy's (`old_logp`) without a second forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from training.collator import MultiverseCollator
from training.encoding import IGNORE
from training.rollouts import Rollout


@dataclass
class PolicyBatch:
    inputs: dict[str, Any]  # input_ids, position_ids [B, L], attention_mask [B, 1, L, L] bool or a BlockMask
    targets: torch.Tensor  # [B, L-1] int64: the next token (0 where not an action)
    actions: torch.Tensor  # [B, L-1] bool: the next token was sampled by the engine
    old_logp: torch.Tensor  # [B, L-1] float32: the engine's log-prob of that token (0 where not an action)
    mask_stats: torch.Tensor  # [3] (tokens, skipped key blocks, causal key blocks): the SFT trainer's log fields


def make_batch(rollouts: Sequence[Rollout], collator: MultiverseCollator) -> PolicyBatch:
    features = []
    for r in rollouts:
        labels = [IGNORE] * len(r.prompt_ids) + [t if lp is not None else IGNORE for t, lp in zip(r.token_ids, r.logprobs)]
        features.append({"input_ids": r.prompt_ids + r.token_ids, "labels": labels})
    batch = collator(features)
    stats = batch.pop("mask_stats")
    labels = batch.pop("labels")[:, 1:]
    actions = labels != IGNORE
    old = torch.zeros(actions.shape, dtype=torch.float32)
    for i, r in enumerate(rollouts):
        start = len(r.prompt_ids) - 1  # logits at position n-1 predict generated token 0
        lps = torch.tensor([lp if lp is not None else 0.0 for lp in r.logprobs], dtype=torch.float32)
        old[i, start: start + len(lps)] = lps
    return PolicyBatch(batch, labels.clamp(min=0), actions, old, stats)


def forward_logits(model: Any, batch: PolicyBatch, device: Any) -> torch.Tensor:
    """[B, L, V] logits of one forward; a BlockMask moves to the device, a dense mask is a tensor."""
    inputs = {k: v.to(device) for k, v in batch.inputs.items()}
    return model(**inputs, use_cache=False).logits


def token_logprobs(logits: torch.Tensor, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp [B, L-1] with 0 off the actions, entropy [B, L-1] in nats, detached) from logits [B, L, V]."""
    actions = batch.actions.to(logits.device)
    logp_all = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp_all.gather(-1, batch.targets.to(logits.device)[..., None])[..., 0]
    entropy = torch.special.entr(logp_all.detach().exp()).sum(-1)
    zero = torch.zeros((), dtype=picked.dtype, device=picked.device)
    return torch.where(actions, picked, zero), torch.where(actions, entropy, zero)
