"""Structure tokens: one id per tag, embedding rows initialised from sub-token means, idempotent."""
from __future__ import annotations

import copy

import pytest
import torch

from multiverse.tags import TAGS, TagIds
from multiverse.tiny import build_model, build_tokenizer
from multiverse.tokens import add_structure_tokens


@pytest.fixture(scope="module")
def plain_tok():
    return build_tokenizer(with_tags=False)


@pytest.mark.parametrize("tied", [True, False])
def test_tags_become_single_tokens_with_mean_rows(plain_tok, tied: bool) -> None:
    tok = copy.deepcopy(plain_tok)
    model = build_model(tok, tie_word_embeddings=tied)
    before_emb = model.get_input_embeddings().weight.detach().clone()
    before_head = model.get_output_embeddings().weight.detach().clone()
    pieces = {t: tok.encode(t[1:-1], add_special_tokens=False) for t in TAGS}
    assert all(len(tok.encode(t, add_special_tokens=False)) > 1 for t in TAGS)

    added = add_structure_tokens(model, tok)

    assert sorted(added) == sorted(TAGS)
    ids = TagIds.from_tokenizer(tok)
    assert len(set(ids.all())) == 12
    for tag, tid in zip(TAGS, ids.all()):
        assert tok.encode(f"x {tag} y", add_special_tokens=False).count(tid) == 1
        emb = model.get_input_embeddings().weight
        torch.testing.assert_close(emb[tid], before_emb[pieces[tag]].mean(0))
        if not tied:
            head = model.get_output_embeddings().weight
            torch.testing.assert_close(head[tid], before_head[pieces[tag]].mean(0))
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    # old rows untouched
    torch.testing.assert_close(model.get_input_embeddings().weight[: before_emb.shape[0]], before_emb)


def test_idempotent(plain_tok) -> None:
    tok = copy.deepcopy(plain_tok)
    model = build_model(tok)
    add_structure_tokens(model, tok)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n = len(tok)
    assert add_structure_tokens(model, tok) == []
    assert len(tok) == n
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_repairs_model_smaller_than_tokenizer(plain_tok) -> None:
    tok = copy.deepcopy(plain_tok)
    model = build_model(tok)
    add_structure_tokens(None, tok)  # tokenizer prepared alone (e.g. loaded from a checkpoint)
    assert model.get_input_embeddings().weight.shape[0] < len(tok)
    assert sorted(add_structure_tokens(model, tok)) == sorted(TAGS)
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
