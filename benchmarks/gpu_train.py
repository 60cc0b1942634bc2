"""The training parts of benchmarks/gpu.py: FlexAttention block masks vs dense masks, and the chunked/Liger loss.

flex_vs_dense(model_fn, tok, device, length): one forward + backward of the same weights on the same batch
  of Multiverse traces (training/collator.py builds both masks from the core layout), BlockMask +
  flex_attention vs dense bool mask + SDPA; the loss difference and the relative gradient difference.
train_step(model_fn, tok, device, kind, length): tokens/s (best of REPEATS after a warm-up that compiles) and
  peak memory of one training step (chunked loss, gradient checkpointing) at `length` tokens; running out of
  GPU memory is recorded as such (the dense mask alone is L x L bytes).
loss_check(device, tokens, vocab, hidden, chunk): plain HF-style loss vs training.loss.chunked_cross_entropy
  (and Liger's fused linear cross-entropy when importable): loss, gradient agreement, time, peak memory.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.train_step import trace_ids
from training.collator import CollatorConfig, MultiverseCollator
from training.loss import chunked_cross_entropy, install_chunked_loss, liger_available

REPEATS = 2
BLOCK = 128


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _batch(tok: Any, ids: list[int], kind: str, device: str) -> dict[str, Any]:
    cfg = CollatorConfig(pad_id=tok.pad_token_id, mask_kind=kind, block_size=BLOCK, pad_to_multiple=BLOCK,
                         device=device if kind == "block" else None)
    batch = MultiverseCollator(tok, cfg)([{"input_ids": ids, "labels": list(ids)}])
    batch.pop("mask_stats")
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _grads(model: Any) -> torch.Tensor:
    return torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])


def flex_vs_dense(model_fn: Callable[[str], Any], tok: Any, device: str, length: int) -> dict[str, Any]:
    """Loss and gradients of both paths on the same weights (CPU: the loss only; FlexAttention has no CPU backward)."""
    ids = trace_ids(length, tok)
    backward = not device.startswith("cpu")
    results, state = {}, None
    for kind, attn in (("dense", "sdpa"), ("block", "flex_attention")):
        model = model_fn(attn).train()
        if state is None:
            state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        with torch.set_grad_enabled(backward):
            loss = model(**_batch(tok, ids, kind, device)).loss
        if backward:
            loss.backward()
        results[kind] = (loss.item(), _grads(model) if backward else None)
        del model
    (dense_loss, g_dense), (block_loss, g_block) = results["dense"], results["block"]
    rel = float((g_block - g_dense).norm() / g_dense.norm()) if backward else None
    return {"tokens": length, "dtype": str(next(iter(state.values())).dtype).removeprefix("torch."),
            "loss_dense": dense_loss, "loss_block": block_loss, "loss_abs_diff": abs(dense_loss - block_loss),
            "grad_rel_diff": rel, "backward": backward}


def train_step(model_fn: Callable[[str], Any], tok: Any, device: str, kind: str, length: int) -> dict[str, Any]:
    model = model_fn("flex_attention" if kind == "block" else "sdpa").train()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    install_chunked_loss(model, chunk=4096)
    ids = trace_ids(length, tok)
    cuda = device.startswith("cuda")
    backward = cuda or kind == "dense"  # FlexAttention has no CPU backward: CPU times its forward only

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            loss = model(**_batch(tok, ids, kind, device)).loss  # the mask is built inside the timed step
        if backward:
            loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start

    try:
        step()  # warm-up: flex_attention compiles for this shape
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        best = min(step() for _ in range(REPEATS))
    except torch.cuda.OutOfMemoryError as err:  # a result, not a failure: a dense [L, L] mask can outgrow the GPU
        return {"mask": kind, "tokens": length, "out_of_memory": str(err).splitlines()[0][:200]}
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20 if cuda else None
    return {"mask": kind, "tokens": length, "backward": backward, "step_s": round(best, 3),
            "tokens_per_s": round(length / best, 1), "peak_mem_mib": None if peak is None else round(peak, 1)}


def _plain(head: torch.nn.Linear, hidden: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    logits = head(hidden).float()  # what the HF causal-LM loss does: full logits, fp32 upcast, shift
    return torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])


def _liger(head: torch.nn.Linear, hidden: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss()(head.weight, hidden[0, :-1], labels[0, 1:])


def _chunked(head: torch.nn.Linear, hidden: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    return chunked_cross_entropy(head, hidden, labels, chunk)


def loss_check(device: str, tokens: int, vocab: int, hidden_size: int, chunk: int, dtype: torch.dtype) -> dict[str, Any]:
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False, device=device, dtype=dtype)
    hidden = torch.randn(1, tokens, hidden_size, device=device, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, vocab, (1, tokens), device=device)
    methods = {"plain": _plain, "chunked": _chunked}
    if device.startswith("cuda") and liger_available():
        methods["liger"] = _liger
    out: dict[str, Any] = {"tokens": tokens, "vocab": vocab, "hidden": hidden_size, "chunk": chunk,
                           "dtype": str(dtype).removeprefix("torch."), "liger_ran": "liger" in methods}
    reference = None
    for name, fn in methods.items():
        hidden.grad = head.weight.grad = None
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        loss = fn(head, hidden, labels, chunk)
        loss.backward()
        _sync(device)
        row = {"seconds": round(time.perf_counter() - start, 4), "loss": loss.item()}
        if device.startswith("cuda"):
            row["peak_mem_mib"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
        grad = hidden.grad.float().flatten()
        if reference is None:
            reference = (loss.item(), grad)
        else:
            row["loss_abs_diff_vs_plain"] = abs(loss.item() - reference[0])
            row["grad_rel_diff_vs_plain"] = float((grad - reference[1]).norm() / reference[1].norm())
        out[name] = row
    return out
