"""Causal-LM cross-entropy without the full [T, V] logits: chunked in pure PyTorch, or Liger's fused kernel.

The plain Hugging Face loss computes logits [B, L, V] in the compute dtype, upcasts them to fp32 and keeps what
backward needs: at 32K tokens x 152K vocabulary that is tens of GB per GPU (training/README.md has the sums).
`chunked_cross_entropy` applies the LM head to `chunk` target tokens at a time inside a checkpoint, so forward
keeps only the chunk's hidden states and backward recomputes one chunk's logits at a time: the live logits are
[chunk, V] instead of [T, V]. Values and gradients equal the plain loss (same shift, same -100, same reduction:
sum / num_items_in_batch when the Trainer passes it, else the mean over target tokens).

`install_chunked_loss` gives a model instance this loss: its `forward` (an instance attribute, so FSDP, PEFT and
the Trainer call it through the usual wrappers) runs the decoder, then the chunked loss; with labels it returns
no logits. Liger's `LigerFusedLinearCrossEntropy` (the `liger` extra, CUDA) does the same in a Triton kernel; the
Trainer applies it through `use_liger_kernel`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.config import ConfigError, TrainConfig

IGNORE = -100
LIGER_KERNELS = {"fused_linear_cross_entropy": True, "cross_entropy": False, "rope": False, "rms_norm": False,
                 "swiglu": False}  # only the loss: the attention path (masks, positions) stays ours


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """[B, L] labels -> [B, L] targets: position t predicts labels[t + 1]; the last position predicts nothing."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


Head = Callable[[torch.Tensor], torch.Tensor]


def _chunk_sum(head: Head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # [chunk, V], the only logits alive at a time
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_cross_entropy(head: Head, hidden: torch.Tensor, labels: torch.Tensor,
                          chunk: int, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """hidden [B, L, H], labels [B, L] (unshifted, -100 = no target) -> scalar loss, as the plain causal-LM loss."""
    targets = shifted_targets(labels).reshape(-1)
    keep = (targets != IGNORE).nonzero().squeeze(1)  # [N] positions that have a target
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)  # [N, H]
    t = targets.index_select(0, keep)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk):
        hc, tc = h[start: start + chunk], t[start: start + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_sum, head, hc, tc, use_reentrant=False)
        else:
            total = total + _chunk_sum(head, hc, tc)
    if num_items_in_batch is None:
        return total / keep.numel()  # NaN on no target, as F.cross_entropy's mean
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def install_chunked_loss(model: Any, chunk: int) -> None:
    """Route `model(..., labels=...)` through the decoder + chunked loss (no [B, L, V] logits)."""
    for name in ("final_logit_softcapping", "logit_scale"):
        if getattr(model.config, name, None):
            raise ConfigError(f"train.loss: chunked applies the LM head as is, but this model has {name}; "
                              "use train.loss: plain")
    from transformers.modeling_outputs import CausalLMOutputWithPast

    original = model.forward
    decoder = model.get_decoder()

    def forward(input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None, labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if labels is None:
            return original(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        kwargs.pop("use_cache", None)
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False, **kwargs)
        head = model.get_output_embeddings()  # looked up per call: PEFT may have wrapped it
        loss = chunked_cross_entropy(head, out.last_hidden_state, labels, chunk, num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=None)

    model.forward = forward


def liger_available() -> bool:
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_loss(cfg: TrainConfig, cuda: bool) -> str:
    """The loss a run uses: plain | chunked | liger (auto: liger on CUDA when installed, else chunked)."""
    if cfg.loss == "auto":
        return "liger" if cuda and liger_available() else "chunked"
    if cfg.loss == "liger" and not (cuda and liger_available()):
        raise ConfigError("train.loss: liger needs CUDA and the liger-kernel package "
                          "(pip install 'multiverse[liger]'); use chunked on this machine")
    return cfg.loss
