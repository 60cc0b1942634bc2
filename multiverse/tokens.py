"""Add the twelve structure tags to any Hugging Face tokenizer and model (SPEC §1).

Each tag becomes one special token. Its input-embedding row starts as the mean of the embedding rows of
the bare word's sub-tokens ("Path" for <Path>, "/Path" for </Path>); the LM-head row likewise when the head
is not tied to the embedding. Calling it again on a prepared pair changes nothing.
"""
from __future__ import annotations

from typing import Any

import torch

from multiverse.tags import TAGS


def _is_single_token(tokenizer: Any, tag: str) -> bool:
    ids = tokenizer.encode(tag, add_special_tokens=False)
    return len(ids) == 1 and tokenizer.convert_tokens_to_ids(tag) == ids[0]


def _bare_word(tag: str) -> str:
    return tag[1:-1]  # "<Path>" -> "Path", "</Path>" -> "/Path"


def add_structure_tokens(model: Any | None, tokenizer: Any) -> list[str]:
    """Add the missing tags; returns the tags whose rows were added (empty when nothing changed).

    Also repairs a model whose embedding is smaller than a tokenizer that already has the tags.
    """
    missing = [t for t in TAGS if not _is_single_token(tokenizer, t)]
    pieces = {t: tokenizer.encode(_bare_word(t), add_special_tokens=False) for t in missing}
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if model is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        for tag in TAGS:
            if tag not in pieces and tokenizer.convert_tokens_to_ids(tag) >= rows:
                pieces[tag] = tokenizer.encode(_bare_word(tag), add_special_tokens=False)
        if pieces:
            _init_rows(model, tokenizer, pieces)
    return list(pieces)


@torch.no_grad()
def _init_rows(model: Any, tokenizer: Any, pieces: dict[str, list[int]]) -> None:
    needed = len(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < needed:
        # Only grow: a padded embedding (e.g. Qwen's 152064 rows) already has room and must not shrink.
        model.resize_token_embeddings(needed, mean_resizing=False)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is None or head.weight.data_ptr() == emb.data_ptr()
    for tag, sub in pieces.items():
        row = tokenizer.convert_tokens_to_ids(tag)
        emb[row] = emb[sub].mean(dim=0)
        if not tied:
            head.weight[row] = head.weight[sub].mean(dim=0)


def load_tagged_tokenizer(name: str) -> Any:
    """A tokenizer with the twelve tags as single tokens: "tiny" (the built-in test tokenizer), a path or a hub name."""
    if name == "tiny":
        from multiverse.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    add_structure_tokens(None, tok)
    return tok
