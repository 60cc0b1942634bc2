"""The task's tokenizer: byte-level BPE trained on the task's text, every digit its own token.

Single-digit tokens keep each arithmetic step local (one digit in, one digit out); words and punctuation merge.
The chat template, end-of-text and turn tokens are those of `multiverse.tiny`, the structure tags are added.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from multiverse.tiny import build_tokenizer


def task_tokenizer(corpus: list[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    return build_tokenizer(vocab_size, with_tags=True, corpus=corpus, digits=True)
