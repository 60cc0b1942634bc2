"""Positions and Multiverse Attention: the invariance proofs of SPEC §3-§5 on a tiny random Qwen2."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from multiverse.attention import (
    block_mask,
    block_tables,
    dense_mask,
    fork_prefix,
    layout,
    merge_token,
    outline_labels,
    pack,
    position_ids,
)
from multiverse.encode import encode_trace
from multiverse.synthetic import SyntheticShape, synthetic_trace
from multiverse.tags import StructureVocab
from multiverse.tiny import build_model

NESTED = (
    "Let's think.<Parallel><Goal>split<Outline>1: even</Outline><Outline>2: odd</Outline><Outline>3: zero</Outline>"
    "</Goal><Path>1: if even<Parallel><Goal><Outline>1.1: small</Outline><Outline>1.2: big</Outline></Goal>"
    "<Path>1.1: small ones</Path><Path>1.2: big ones</Path><Conclusion>both fine</Conclusion></Parallel> done</Path>"
    "<Path>2: odd case here</Path><Path>3: zero is trivial</Path><Conclusion>all cases agree</Conclusion>"
    "</Parallel> Answer 4"
)
FLAT = (
    "q<Parallel><Goal>two ways<Outline>1: direct</Outline><Outline>2: check</Outline></Goal>"
    "<Path>1: compute it directly</Path><Path>2: verify the value</Path><Conclusion>so 4</Conclusion></Parallel> end"
)


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=64, num_layers=2).float().eval()


def _logits(model, ids: list[int], pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), position_ids=pos[None], attention_mask=mask[None, None])
    return out.logits[0]


def _spans(ids: list[int], vocab: StructureVocab, open_id: int, close_id: int) -> list[tuple[int, int]]:
    """[start, end] token indices of matched open/close tags, outermost first by start."""
    stack, spans = [], []
    for i, t in enumerate(ids):
        if t == open_id:
            stack.append(i)
        elif t == close_id:
            spans.append((stack.pop(), i))
    return sorted(spans)


def _top_level(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [p for p in spans if not any(q[0] < p[0] and p[1] < q[1] for q in spans)]


def test_positions_follow_spec(tok) -> None:
    v = StructureVocab.from_tokenizer(tok)
    ids = encode_trace(NESTED, tok)
    pos = position_ids(ids, tok).tolist()
    goal_ends = [i for i, t in enumerate(ids) if t == v.tags.goal_close]
    paths = _spans(ids, v, v.tags.path_open, v.tags.path_close)
    # every top-level path starts at g+1, the conclusion lands at max(</Path>)+1
    top = _top_level(paths)
    assert len(top) == 3
    g = pos[goal_ends[0]]
    assert all(pos[s] == g + 1 for s, _ in top)
    conclusion = [i for i, t in enumerate(ids) if t == v.tags.conclusion_open][-1]
    assert pos[conclusion] == max(pos[e] for _, e in top) + 1
    assert max(pos) < len(ids) - 1  # critical path shorter than the token count
    # inside a path positions rise by one (except across a nested block's siblings)
    s, e = top[2]
    assert pos[s : e + 1] == list(range(pos[s], pos[s] + e - s + 1))


@pytest.mark.parametrize("text", [FLAT, NESTED], ids=["flat", "nested"])
def test_path_alone_equals_path_in_full_sequence(tok, model, text: str) -> None:
    """(i) logits at path k from one forward over the whole sequence == forward over [prefix, path k] alone."""
    v = StructureVocab.from_tokenizer(tok)
    ids = encode_trace(text, tok)
    lay = layout(ids, tok, strict=True)
    full = _logits(model, ids, lay.positions, lay.dense())
    first_goal_end = ids.index(v.tags.goal_close)
    top = _top_level(_spans(ids, v, v.tags.path_open, v.tags.path_close))
    assert len(top) >= 2
    for s, e in top:
        keep = list(range(first_goal_end + 1)) + list(range(s, e + 1))
        sub = [ids[i] for i in keep]
        sub_lay = layout(sub, tok)
        assert sub_lay.positions.tolist() == lay.positions[keep].tolist()
        alone = _logits(model, sub, sub_lay.positions, sub_lay.dense())
        torch.testing.assert_close(alone[first_goal_end + 1 :], full[s : e + 1], atol=1e-5, rtol=1e-5)


def test_conclusion_equals_concatenated_path_kv(tok, model) -> None:
    """(ii) the conclusion over prefix KV + per-path KV computed separately == the one full forward."""
    v = StructureVocab.from_tokenizer(tok)
    ids = encode_trace(FLAT, tok)
    lay = layout(ids, tok, strict=True)
    full = _logits(model, ids, lay.positions, lay.dense())
    g = ids.index(v.tags.goal_close)
    paths = _spans(ids, v, v.tags.path_open, v.tags.path_close)
    conclusion = ids.index(v.tags.conclusion_open)

    def run(cache: DynamicCache, span: list[int]) -> torch.Tensor:
        past = cache.get_seq_length()
        mask = torch.ones(len(span), past + len(span), dtype=torch.bool)
        mask[:, past:] = torch.tril(mask[:, past:])
        with torch.no_grad():
            out = model(
                input_ids=torch.tensor([[ids[i] for i in span]]),
                position_ids=lay.positions[span][None],
                attention_mask=mask[None, None],
                past_key_values=cache,
                use_cache=True,
            )
        return out.logits[0]

    prefix = DynamicCache()
    run(prefix, list(range(g + 1)))
    n_layers = len(prefix.layers)
    keys = [[prefix.layers[i].keys] for i in range(n_layers)]
    values = [[prefix.layers[i].values] for i in range(n_layers)]
    for s, e in paths:
        cache = DynamicCache()
        for i in range(n_layers):
            cache.update(prefix.layers[i].keys.clone(), prefix.layers[i].values.clone(), i)
        run(cache, list(range(s, e + 1)))
        for i in range(n_layers):
            keys[i].append(cache.layers[i].keys[:, :, g + 1 :])
            values[i].append(cache.layers[i].values[:, :, g + 1 :])
    merged = DynamicCache()
    for i in range(n_layers):
        merged.update(torch.cat(keys[i], dim=2), torch.cat(values[i], dim=2), i)
    assert merged.get_seq_length() == conclusion
    tail = run(merged, list(range(conclusion, len(ids))))
    torch.testing.assert_close(tail, full[conclusion:], atol=1e-5, rtol=1e-5)


def test_packed_row_equals_samples_alone(tok, model) -> None:
    samples = [encode_trace(t, tok) for t in (FLAT, NESTED, synthetic_trace(3))]
    ids, docs = pack(samples)
    lay = layout(ids, tok, docs)
    packed = _logits(model, ids, lay.positions, lay.dense())
    start = 0
    for sample in samples:
        alone = layout(sample, tok)
        assert lay.positions[start : start + len(sample)].tolist() == alone.positions.tolist()
        ref = _logits(model, sample, alone.positions, alone.dense())
        torch.testing.assert_close(packed[start : start + len(sample)], ref, atol=1e-5, rtol=1e-5)
        start += len(sample)


@pytest.mark.parametrize("block_size", [16, 128])
def test_block_mask_equals_dense_mask(tok, block_size: int) -> None:
    """(iii) flex attention with our BlockMask == SDPA with the dense mask, on nested blocks and a packed row."""
    from torch.nn.attention.flex_attention import flex_attention

    samples = [encode_trace(synthetic_trace(s, 2, SyntheticShape(max_depth=3)), tok) for s in range(3)]
    ids, docs = pack(samples)
    dense = dense_mask(ids, tok, docs)
    bm = block_mask(ids, tok, docs, block_size=block_size)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, len(ids), 16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense[None, None])
    # Compiled: the eager fallback evaluates mask_mod everywhere and would not exercise the block tables.
    got = torch.compile(flex_attention)(q, k, v, block_mask=bm)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_size", [1, 3, 8, 64])
def test_block_tables_agree_with_dense(tok, block_size: int) -> None:
    ids = encode_trace(synthetic_trace(7, 2, SyntheticShape(max_depth=3)), tok)
    lay = layout(ids, tok)
    dense = lay.dense()
    full, partial = block_tables(lay, block_size)
    n, L = full.shape[0], len(ids)
    pad = n * block_size - L

    def tiles(fill: bool) -> torch.Tensor:
        grid = torch.nn.functional.pad(dense, (0, pad, 0, pad), value=fill)
        return grid.view(n, block_size, n, block_size)

    every = tiles(True).all(dim=3).all(dim=1)
    some = tiles(False).any(dim=3).any(dim=1)
    assert torch.equal(full, every)
    assert torch.equal(partial, some & ~every)
    assert full.any() and (partial.any() or block_size == 1)


def test_batched_block_mask_rows(tok) -> None:
    rows = [encode_trace(synthetic_trace(s), tok) for s in (1, 2)]
    L = max(map(len, rows))
    pad = tok.pad_token_id
    batch = torch.tensor([r + [pad] * (L - len(r)) for r in rows])
    docs = torch.tensor([[0] * len(r) + [1] * (L - len(r)) for r in rows])
    bm = block_mask(batch, tok, docs, block_size=16)
    assert bm.kv_num_blocks.shape[0] == 2
    for b in range(2):
        dense = dense_mask(batch[b], tok, docs[b])
        qi, ki = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
        got = bm.mask_mod(torch.tensor(b), torch.tensor(0), qi, ki)
        assert torch.equal(got, dense)


def test_fork_merge_helpers_match_layout(tok) -> None:
    v = StructureVocab.from_tokenizer(tok)
    ids = encode_trace(FLAT, tok)
    pos = position_ids(ids, tok)
    g = ids.index(v.tags.goal_close)
    assert outline_labels(ids[: g + 1], tok) == ["1", "2"]
    paths = _spans(ids, v, v.tags.path_open, v.tags.path_close)
    for label, (s, _) in zip(["1", "2"], paths):
        forced, forced_pos = fork_prefix(label, int(pos[g]), tok)
        assert ids[s : s + len(forced)] == forced
        assert pos[s : s + len(forced)].tolist() == forced_pos
    token, position = merge_token([int(pos[e]) for _, e in paths], tok)
    c = ids.index(v.tags.conclusion_open)
    assert (token, position) == (ids[c], int(pos[c]))


def test_fallback_blocks_are_sequential(tok) -> None:
    """No labelled outline: the block runs causally, positions rise by one; the scan reports why."""
    text = "a<Parallel><Goal><Outline>no label</Outline></Goal><Path>x</Path><Conclusion>c</Conclusion></Parallel>"
    ids = encode_trace(text, tok, canonical=False)
    lay = layout(ids, tok)
    assert lay.positions.tolist() == list(range(len(ids)))
    assert torch.equal(lay.dense(), torch.tril(torch.ones(len(ids), len(ids), dtype=torch.bool)))
    assert lay.fallbacks and lay.fallbacks[0][1] == "unlabelled_outline"


@pytest.mark.parametrize("seed", range(12))
def test_layout_matches_naive_reference(tok, seed: int) -> None:
    from naive_layout import naive_layout

    from multiverse.tags import TagIds

    shape = SyntheticShape(max_depth=1 + seed % 3, max_paths=1 + seed % 5, block_chance=0.7)
    ids = encode_trace(synthetic_trace(seed, 1 + seed % 3, shape), tok)
    pos, visible = naive_layout(ids, TagIds.from_tokenizer(tok))
    lay = layout(ids, tok, strict=True)
    assert lay.positions.tolist() == pos
    assert torch.equal(lay.dense(), visible)


def test_consume_text_equals_stepping(tok) -> None:
    """The layout's bulk text path is the engine's per-token path."""
    import random

    from multiverse.attention import BranchState

    v = StructureVocab.from_tokenizer(tok)
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.choice(list(v.tags.all()) + [5, 6, 7, 19, 28]) for _ in range(60)]
        a, b = BranchState(v), BranchState(v)
        events_a, events_b = [], []
        i = 0
        while i < len(ids):
            if ids[i] in v.tags.id_set:
                events_a.append(a.step(ids[i]))
                events_b.append(b.step(ids[i]))
                i += 1
                continue
            j = i
            while j < len(ids) and ids[j] not in v.tags.id_set:
                events_a.append(a.step(ids[j]))
                j += 1
            b.consume_text(ids[i:j])
            i = j
        assert [e for e in events_a if e is not None] == [e for e in events_b if e is not None]
        assert (a.position, a.phase, a.outlines, a.open_paths) == (b.position, b.phase, b.outlines, b.open_paths)
