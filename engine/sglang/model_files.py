"""Where the SGLang client finds its tokenizer and end-of-sequence ids: the same files the native engine reads.

The native engine stops on the tokenizer's eos plus the model's generation config `eos_token_id` (for Qwen
chat models `<|im_end|>` is only there). The client reads them from, in order: the model path it was given,
else the server's model (`/model_info`: `tokenizer_path`, `model_path`; SGLang and `multiverse serve` both
answer it). The generation config is `generation_config.json`, else built from `config.json` as transformers
does when it loads the model. A path named but unreadable is an error naming it (a client that silently
stopped on the tokenizer's eos alone would write past the model's end of turn).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.driver import eos_ids


def client_tokenizer(model: Any, tokenizer: Any, info: dict[str, Any]) -> Any:
    """The tokenizer given, else the one at the model path, else the server's tokenizer path."""
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    path = _path(model) or info.get("tokenizer_path") or info.get("model_path")
    if not path:
        raise ValueError("pass the model path (or tokenizer=) so the client can tokenize: the server did not name its model")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the tokenizer from {path!r}: {err}") from err


def client_eos_ids(model: Any, tokenizer: Any, info: dict[str, Any]) -> frozenset[int]:
    """The tokenizer's eos plus the generation config's, read where the native engine would read them."""
    tried = [p for p in dict.fromkeys([_path(model), info.get("model_path")]) if p]
    for path in tried:
        generation = _generation_config(path)
        if generation is not None:
            return eos_ids(tokenizer, generation)
    if tried:
        raise ValueError(
            f"cannot read a generation config (generation_config.json or config.json) at {' or '.join(map(repr, tried))}: "
            "the client needs the model's end-of-sequence ids; pass model= a local copy of the served model")
    return eos_ids(tokenizer)  # a model built in the server's process: its tokenizer is all there is


def _path(model: Any) -> str | None:
    return str(model) if isinstance(model, (str, Path)) else None


def _generation_config(path: str) -> Any:
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        pass
    try:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))
    except (OSError, ValueError):
        return None


__all__ = ["client_eos_ids", "client_tokenizer"]
