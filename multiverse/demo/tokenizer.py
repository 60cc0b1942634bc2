"""The task's tokenizer: byte-level BPE trained on the task's text, every digit its own token.

Digits are split as Qwen2's own pre-tokenizer splits them: the models are Qwen2, and `AutoTokenizer` gives a
Qwen2 model directory a Qwen2 tokenizer (its digit-splitting pre-tokenizer over our vocabulary and merges), so
training and inference read the text the same way. Words and punctuation merge as BPE learns.
The chat template, end-of-text and turn tokens are those of `multiverse.tiny`, the structure tags are added.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from multiverse.tiny import build_tokenizer


def task_tokenizer(corpus: list[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    return build_tokenizer(vocab_size, with_tags=True, corpus=corpus, digits=True)
