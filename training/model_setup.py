"""Load the causal LM and its tokenizer, add the structure tokens (core), settle pad token and attention kernel.

Attention kernel: on CUDA the default is FlexAttention (the collator then builds BlockMasks, so sibling paths
are skipped block by block); on CPU it is SDPA with the dense boolean mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from multiverse.tokens import add_structure_tokens
from training.config import ConfigError, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FALLBACK_PADS = ("<|fim_pad|>", "<|finetune_right_pad_id|>")


@dataclass(frozen=True)
class Loaded:
    model: Any
    tokenizer: Any
    attn_implementation: str
    added_tags: tuple[str, ...]
    use_cache: bool = True  # the model's own setting (saved configs keep it; training runs without a cache)


def resolve_attention(cfg: ModelConfig) -> str:
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return "flex_attention" if torch.cuda.is_available() else "sdpa"


def resolve_dtype(cfg: ModelConfig) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be auto or one of {', '.join(DTYPES)}; got {cfg.dtype!r}")
    return DTYPES[cfg.dtype]


def set_pad_token(tokenizer: Any, wanted: str | None) -> None:
    """The configured pad token; else keep the tokenizer's; else a reserved pad token; else eos."""
    if wanted is not None:
        if tokenizer.convert_tokens_to_ids(wanted) in (None, tokenizer.unk_token_id):
            raise ConfigError(f"model.pad_token {wanted!r} is not a token of the tokenizer")
        tokenizer.pad_token = wanted
        return
    if tokenizer.pad_token is not None:
        return
    vocab = tokenizer.get_vocab()
    tokenizer.pad_token = next((t for t in FALLBACK_PADS if t in vocab), tokenizer.eos_token)
    if tokenizer.pad_token is None:
        raise ConfigError("the tokenizer has no pad, no eos and no reserved pad token; set model.pad_token")


def load_tokenizer(cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
    set_pad_token(tok, cfg.pad_token)
    if not getattr(tok, "chat_template", None):
        raise ConfigError(f"tokenizer of {cfg.tokenizer or cfg.name_or_path} has no chat template")
    return tok


def load(cfg: ModelConfig) -> Loaded:
    """Model (train mode, no KV cache) and tokenizer, with the twelve tags as single, initialised tokens."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(cfg)
    attn = resolve_attention(cfg)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.name_or_path,
        dtype=resolve_dtype(cfg),
        attn_implementation=attn,
        trust_remote_code=cfg.trust_remote_code,
    )
    added = add_structure_tokens(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    use_cache = bool(getattr(model.config, "use_cache", True))
    model.config.use_cache = False
    model.train()
    return Loaded(model, tokenizer, attn, tuple(added), use_cache)
