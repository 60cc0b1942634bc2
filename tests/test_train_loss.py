"""Chunked cross-entropy: the plain causal-LM loss's values and gradients, without [T, V] logits kept for backward."""
from __future__ import annotations

import copy

import pytest
import torch

from multiverse.tiny import build_model, build_tokenizer
from training.config import ConfigError, TrainConfig
from training.loss import chunked_cross_entropy, install_chunked_loss, liger_available, resolve_loss


@pytest.fixture(scope="module")
def pair(one_thread):
    torch.manual_seed(0)
    tok = build_tokenizer()
    plain = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, attn_implementation="sdpa")
    chunked = copy.deepcopy(plain)
    install_chunked_loss(chunked, 7)  # 7 does not divide the target count: a ragged last chunk
    ids = torch.randint(0, len(tok), (2, 40))
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[1, 30:] = -100  # padding of a shorter row
    return plain, chunked, ids, labels


@pytest.mark.parametrize("items", [None, 61])
def test_chunked_loss_equals_plain_loss_and_gradients(pair, items) -> None:
    plain, chunked, ids, labels = pair
    kw = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    a = plain(input_ids=ids, labels=labels, **kw)
    b = chunked(input_ids=ids, labels=labels, **kw)
    assert b.logits is None  # nothing of size [B, L, V] is returned
    a.loss.backward()
    b.loss.backward()
    assert b.loss.item() == pytest.approx(a.loss.item(), rel=1e-5)
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    plain.zero_grad()
    chunked.zero_grad()


def test_without_labels_the_model_still_returns_logits(pair) -> None:
    plain, chunked, ids, _ = pair
    with torch.no_grad():
        torch.testing.assert_close(chunked(input_ids=ids).logits, plain(input_ids=ids).logits)


def _largest_saved(fn) -> int:
    """The element count of the largest tensor autograd saves for backward while fn() runs."""
    sizes = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().backward()
    return max(sizes)


def test_no_full_logits_are_kept_for_backward() -> None:
    torch.manual_seed(0)
    T, H, V, chunk = 256, 16, 1000, 32
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(1, T, H, requires_grad=True)
    labels = torch.randint(0, V, (1, T))

    def plain() -> torch.Tensor:
        logits = head(hidden).float()[0, :-1]
        return torch.nn.functional.cross_entropy(logits, labels[0, 1:])

    chunked = lambda: chunked_cross_entropy(head, hidden, labels, chunk)  # noqa: E731
    assert _largest_saved(plain) >= (T - 1) * V  # the plain loss keeps [T, V]
    assert _largest_saved(chunked) <= max(chunk * V, V * H)  # at most one chunk's logits (recomputed) or W
    hidden.grad = None
    a = plain()
    a.backward()
    g = hidden.grad.clone()
    hidden.grad = None
    b = chunked()
    b.backward()
    assert b.item() == pytest.approx(a.item(), rel=1e-5)
    torch.testing.assert_close(hidden.grad, g, rtol=1e-4, atol=1e-7)


def test_loss_choice() -> None:
    assert resolve_loss(TrainConfig(loss="auto"), cuda=False) == "chunked"
    assert resolve_loss(TrainConfig(loss="plain"), cuda=True) == "plain"
    with pytest.raises(ConfigError, match="liger needs CUDA and the liger-kernel package"):
        resolve_loss(TrainConfig(loss="liger"), cuda=False)


@pytest.mark.skipif(not (torch.cuda.is_available() and liger_available()), reason="Liger needs CUDA + liger-kernel")
def test_liger_fused_loss_matches_plain_on_cuda() -> None:  # pragma: no cover - GPU machines only
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 5000, bias=False).cuda()
    hidden = torch.randn(300, 64, device="cuda")
    targets = torch.randint(0, 5000, (300,), device="cuda")
    fused = LigerFusedLinearCrossEntropyLoss()(head.weight, hidden, targets)
    plain = torch.nn.functional.cross_entropy(head(hidden).float(), targets)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-4)
