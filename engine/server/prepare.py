"""From a validated request body to engine input: prompt ids (checked against the context) and SamplingParams.

Everything here runs before the engine sees the request, so every refusal is a 400 naming the field.
"""
from __future__ import annotations

from typing import Any

from engine.driver import PromptTooLong
from engine.params import SamplingParams
from engine.server.config import ServerConfig
from engine.server.errors import APIError


def encode(lm: Any, prompt: Any, param: str, config: ServerConfig, max_chars: int | None = None) -> list[int]:
    """Token ids of a text, an id list or chat messages, checked against the context (a worker thread runs
    this). Text over max_chars is refused untokenized; a chat template that refuses the messages is a 400."""
    try:
        ids = lm.encode_prompt(prompt, max_chars=max_chars, raw=True)  # text is a completion prompt, as is
    except PromptTooLong as err:
        raise APIError(
            400,
            f"{param}: this model's maximum context length is {config.max_model_len} tokens, and no prompt text "
            f"longer than {err.limit} characters can fit it; this one has {err.chars} characters (refused untokenized)",
            param,
            "context_length_exceeded",
        ) from err
    except (TypeError, ValueError) as err:
        raise APIError(400, f"{param}: {err}", param) from err
    except Exception as err:  # noqa: BLE001 - e.g. a template enforcing role order raises TemplateError
        raise APIError(400, f"{param}: the chat template refused them ({type(err).__name__}: {err})", param) from err
    if not ids:
        raise APIError(400, f"{param}: encodes to no tokens", param)
    check_context(ids, config, param)
    return ids


def check_context(ids: list[int], config: ServerConfig, param: str) -> None:
    """The prompt must leave room for at least one generated position."""
    if len(ids) >= config.max_model_len:
        raise APIError(
            400,
            f"{param}: this model's maximum context length is {config.max_model_len} tokens, but the prompt has "
            f"{len(ids)} tokens (at least one position must remain for the completion)",
            param,
            "context_length_exceeded",
        )


def critical_cap(ids: list[int], config: ServerConfig, asked: int | None) -> int:
    """Positions left in the context: no branch may decode past the model's position range."""
    room = config.max_model_len - len(ids)
    return room if asked is None else min(asked, room)


def sampling_params(**fields: Any) -> SamplingParams:
    """SamplingParams(**fields); its own checks (a second line of defence) become a 400 too."""
    try:
        return SamplingParams(**fields)
    except (TypeError, ValueError) as err:
        raise APIError(400, str(err)) from err


def check_model(asked: str | None, config: ServerConfig) -> None:
    if asked is not None and asked != config.model_name:
        raise APIError(
            404, f"model {asked!r} does not exist; this server serves {config.model_name!r}", "model", "model_not_found"
        )
