"""The collator's batch equals the core module per sample; packing keeps per-sample losses; flex == dense."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multiverse.attention import StructureRules, dense_mask, layout, position_ids
from multiverse.tiny import build_model, build_tokenizer
from training.collator import CollatorConfig, MultiverseCollator
from training.config import DataConfig
from training.data import multiverse_examples
from training.encoding import IGNORE, encode_example
from training.packing import group, pack_samples
from training.tiny_assets import synthetic_rows


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def samples(tokenizer):
    cfg = DataConfig()
    exs = multiverse_examples(synthetic_rows(6, seed=5), "t", cfg, twin=False)
    return [encode_example(e, tokenizer, cfg) for e in exs]


def collate(tokenizer, feats, **kw):
    return MultiverseCollator(tokenizer, CollatorConfig(pad_id=tokenizer.pad_token_id, **kw))(feats)


def test_batch_equals_core_per_sample(tokenizer, samples) -> None:
    feats = samples[:3]
    batch = collate(tokenizer, feats)
    L = max(len(s["input_ids"]) for s in feats)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (3, L)
    mask = batch["attention_mask"]
    assert mask.dtype == torch.bool and mask.shape == (3, 1, L, L)
    for b, s in enumerate(feats):
        n = len(s["input_ids"])
        ids = torch.tensor(s["input_ids"])
        assert batch["input_ids"][b, :n].tolist() == s["input_ids"]
        assert batch["labels"][b, :n].tolist() == s["labels"] and (batch["labels"][b, n:] == IGNORE).all()
        assert torch.equal(batch["position_ids"][b, :n], position_ids(ids, tokenizer))
        assert torch.equal(mask[b, 0, :n, :n], dense_mask(ids, tokenizer))
        assert not mask[b, 0, :n, n:].any() and not mask[b, 0, n:, :n].any()  # padding is its own document
    assert mask.any(dim=-1).all()  # no query row is fully masked
    # the Multiverse mask is strictly sparser than causal on these rows (siblings hidden)
    n0 = len(feats[0]["input_ids"])
    assert mask[0, 0, :n0, :n0].sum() < torch.ones(n0, n0).tril().sum()


def test_packed_row_equals_core_per_document(tokenizer, samples) -> None:
    rows = pack_samples(samples[:4], block_size=10_000)
    assert len(rows) == 1
    batch = collate(tokenizer, rows)
    start = 0
    for s in samples[:4]:
        n = len(s["input_ids"])
        ids = torch.tensor(s["input_ids"])
        sl = slice(start, start + n)
        assert torch.equal(batch["position_ids"][0, sl], position_ids(ids, tokenizer))  # positions restart
        assert torch.equal(batch["attention_mask"][0, 0, sl, sl], dense_mask(ids, tokenizer))
        assert not batch["attention_mask"][0, 0, sl, :start].any()  # earlier documents are hidden
        assert batch["labels"][0, start] == IGNORE
        start += n


def test_group_respects_block_size(samples) -> None:
    lengths = [len(s["input_ids"]) for s in samples]
    limit = max(lengths) + min(lengths)
    rows = group(samples, limit)
    assert [s for r in rows for s in r] == samples  # order kept
    assert all(sum(len(s["input_ids"]) for s in r) <= limit for r in rows)
    with pytest.raises(ValueError, match="exceeds block_size"):
        group(samples, min(lengths) - 1)


def _doc_losses(model, batch, spans) -> list[float]:
    """Mean next-token loss of each document span (row, start, stop) of a batch."""
    stats = batch.pop("mask_stats")
    assert stats[0] > 0
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    out = []
    for row, start, stop in spans:
        lab = batch["labels"][row, start + 1 : stop]
        lg = logits[row, start : stop - 1]
        out.append(F.cross_entropy(lg, lab, ignore_index=IGNORE).item())
    return out


def test_packing_gives_the_same_per_sample_losses(tokenizer, samples) -> None:
    model = build_model(tokenizer, hidden_size=48, seed=1)
    alone = [_doc_losses(model, collate(tokenizer, [s]), [(0, 0, len(s["input_ids"]))])[0] for s in samples]
    limit = sum(len(s["input_ids"]) for s in samples[:3]) + 5
    rows = pack_samples(samples, limit)
    assert len(rows) >= 2 and any(len(set(r["doc_ids"])) > 1 for r in rows)
    spans = []
    for r, row in enumerate(rows):
        start = 0
        for n in [row["doc_ids"].count(d) for d in sorted(set(row["doc_ids"]))]:
            spans.append((r, start, start + n))
            start += n
    packed = _doc_losses(model, collate(tokenizer, rows), spans)  # micro-batch of packed rows, padded
    assert len(packed) == len(alone)
    torch.testing.assert_close(torch.tensor(packed), torch.tensor(alone), rtol=1e-5, atol=1e-5)


def test_baseline_mode_is_plain_causal(tokenizer, samples) -> None:
    s = samples[2]
    n = len(s["input_ids"])
    batch = collate(tokenizer, [s], parallel=False)
    assert torch.equal(batch["attention_mask"][0, 0], torch.ones(n, n, dtype=torch.bool).tril())
    assert batch["position_ids"][0].tolist() == list(range(n))
    assert torch.equal(batch["position_ids"][0], layout(s["input_ids"], tokenizer, rules=StructureRules(parallel=False)).positions)
    assert batch["mask_stats"][1] == 0  # nothing skipped beyond causal


def test_block_mask_flex_attention_matches_dense(tokenizer, samples) -> None:
    """The CUDA path (BlockMask + flex_attention) computes the same loss as the CPU path (dense + SDPA)."""
    feats = samples[:2]
    dense = collate(tokenizer, feats)
    block = collate(tokenizer, feats, mask_kind="block", block_size=32, pad_to_multiple=32)
    assert block["input_ids"].shape[1] % 32 == 0
    same_grid = collate(tokenizer, feats, block_size=32, pad_to_multiple=32)  # dense, same tiles
    assert torch.equal(block["mask_stats"], same_grid["mask_stats"]) and block["mask_stats"][1] > 0
    for b in (dense, block):
        b.pop("mask_stats")
    sdpa = build_model(tokenizer, seed=2, attn_implementation="sdpa")
    flex = build_model(tokenizer, seed=2, attn_implementation="flex_attention")
    with torch.no_grad():
        a, c = sdpa(**dense).loss, flex(**block).loss
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
