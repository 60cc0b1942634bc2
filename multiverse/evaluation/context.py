"""The model's context length, and each request's budget fitted into it.

Where the length comes from, first found wins: a server's own word (`/v1/models` `max_model_len`: vLLM, SGLang,
`multiverse serve`; SGLang's `/get_server_info` or `/get_model_info` `context_length`), the model's config
(`max_position_embeddings`), the tokenizer's `model_max_length` (when it is a real number, not the 1e30 that
tokenizers without one report). Positions are what the context bounds: the prompt plus the critical path (a
forked block's paths share positions), so a request's critical-path budget is capped at `length - prompt`; a prompt
that leaves no room is refused before anything runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from multiverse.evaluation.backends.base import Decoding

NO_LIMIT = 10**9  # tokenizers without a limit report ~1e30


@dataclass(frozen=True)
class Context:
    length: int | None  # positions the model can address (prompt + generation); None: unknown
    source: str  # where `length` was read, e.g. "config.json max_position_embeddings"

    def room(self, prompt_tokens: int) -> int | None:
        return None if self.length is None else self.length - prompt_tokens


UNKNOWN = Context(None, "unknown (no max_position_embeddings, model_max_length or server field)")


def from_model(model: Any = None, tokenizer: Any = None) -> Context:
    """A loaded model's config, else the tokenizer's limit."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    length = getattr(config, "max_position_embeddings", None)
    if isinstance(length, int) and length > 0:
        return Context(length, "the model's config max_position_embeddings")
    return from_tokenizer(tokenizer)


def from_tokenizer(tokenizer: Any) -> Context:
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < NO_LIMIT:
        return Context(length, "the tokenizer's model_max_length")
    return UNKNOWN


def from_directory(path: str | None, tokenizer: Any = None) -> Context:
    """A model directory's config.json (openai backend: the model the tokenizer came from), else the tokenizer."""
    if path and os.path.isfile(os.path.join(path, "config.json")):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError):
            config = None
        if config is not None:
            found = from_model(type("Loaded", (), {"config": config})())
            if found.length is not None:
                return Context(found.length, f"{path}/config.json max_position_embeddings")
    return from_tokenizer(tokenizer)


def from_server(base_url: str, served: str, api_key: str = "EMPTY") -> Context | None:
    """What an OpenAI-compatible server says of `served`: /models max_model_len, else SGLang's info routes."""
    import httpx

    root = base_url.rstrip("/")
    with httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as http:
        try:
            for card in http.get(f"{root}/models").json().get("data", []):
                if card.get("id") == served and isinstance(card.get("max_model_len"), int):
                    return Context(card["max_model_len"], f"{root}/models max_model_len")
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        for route in ("get_server_info", "get_model_info"):  # SGLang's native routes, beside /v1
            url = f"{root.removesuffix('/v1')}/{route}"
            try:
                info = http.get(url).json()
            except (httpx.HTTPError, ValueError):
                continue
            length = info.get("context_length") if isinstance(info, dict) else None
            if isinstance(length, int) and length > 0:
                return Context(length, f"{url} context_length")
    return None


def fit(decoding: Decoding, prompt_tokens: int, context: Context, cap_total: bool = False) -> Decoding:
    """`decoding` within the context: the critical-path budget capped at the positions left (and, with
    `cap_total`, for a server that counts max_tokens against the context, the total too)."""
    room = context.room(prompt_tokens)
    if room is None:
        return decoding
    if room < 1:
        raise ValueError(f"the prompt has {prompt_tokens} tokens; the context ({context.length}) leaves no room")
    asked = decoding.max_critical_tokens if decoding.max_critical_tokens is not None else decoding.max_new_tokens
    out = decoding if asked <= room else replace(decoding, max_critical_tokens=room)
    if cap_total and out.max_new_tokens > room:
        out = replace(out, max_new_tokens=room)
    return out
