"""Tiny, real Hugging Face models and tokenizers built offline: for tests, benchmarks and CPU demos.

The tokenizer is a byte-level BPE trained in-process on a small built-in corpus, wrapped as a
PreTrainedTokenizerFast with a chat template; the model is a randomly initialised Qwen2 or Llama.
"""
from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from multiverse.tags import TAGS

EOS = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Let's think in parallel. First compute the sum, then check the answer.",
    "The answer is 42. We need to find the value of x such that x + 3 = 7, so x = 4.",
    "Path Goal Outline Conclusion Parallel Think: case one, case two, check both results.",
    "Consider the triangle with sides 3, 4 and 5; its area is 6 and its perimeter is 12.",
    "Therefore the probability is 1/2. Alternatively, count the outcomes: 0 1 2 3 4 5 6 7 8 9.",
    "Question: what is 12 * 12? Answer: 144. Final Answer: \\boxed{144}",
]


def build_tokenizer(
    vocab_size: int = 512, with_tags: bool = True, corpus: list[str] | None = None, digits: bool = False
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (trained on `corpus`, default a small built-in text); with_tags adds the tags;
    digits=True keeps every digit its own token (arithmetic tasks)."""
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    split_digits = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    tok.pre_tokenizer = pre_tokenizers.Sequence([*split_digits, byte_level]) if digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else _CORPUS * 4, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    hf.chat_template = CHAT_TEMPLATE
    if with_tags:
        hf.add_tokens(list(TAGS), special_tokens=True)
    return hf


def build_model(
    tokenizer: Any,
    family: str = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    attn_implementation: str = "sdpa",
) -> torch.nn.Module:
    """A randomly initialised causal LM sized to the tokenizer (float32, eval mode)."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[family]
    config = config_cls(**common)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_cls(config)
    return model.eval()
