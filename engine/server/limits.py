"""The front door's limits, derived once at start-up from the config, the context length and the tokenizer.

Every limit is checked before any expensive work, so an oversized request costs milliseconds:
- the body cap (413) before the body is read, from `Content-Length` (or while a chunked body arrives);
- the prompt-character cap (400) before tokenizing: no token spans more than `longest_token_chars`
  characters, so a text of more than `max_model_len * longest_token_chars` characters has at least
  `max_model_len` tokens and cannot fit the context;
- the request cap (503 + Retry-After): at most `max_running + max_waiting` requests in flight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.server.config import ServerConfig

BYTES_PER_POSITION = 64  # a full-context prompt as JSON text (<= ~8 bytes a token) or ids (<= 8) fits 8x over
MIN_BODY_BYTES = 1 << 20
RETRY_AFTER_S = 1  # what a 503 asks the client to wait; a queue slot frees when any request ends


@dataclass(frozen=True)
class Limits:
    body_bytes: int  # request bodies above this get 413
    prompt_chars: int  # prompt text (after the chat template) above this gets 400 untokenized
    in_flight: int  # requests the server holds at once (max_running + max_waiting); more get 503
    max_waiting: int
    retry_after_s: int = RETRY_AFTER_S

    @classmethod
    def derive(cls, config: ServerConfig, lm: Any) -> "Limits":
        body = config.max_body_bytes or max(MIN_BODY_BYTES, BYTES_PER_POSITION * config.max_model_len)
        chars = config.max_prompt_chars or config.max_model_len * longest_token_chars(lm.tokenizer)
        return cls(body, chars, lm.config.max_running + config.max_waiting, config.max_waiting)


def longest_token_chars(tokenizer: Any) -> int:
    """Characters of the longest vocabulary entry, special tokens included: an upper bound on the characters
    of text one token covers (byte-level BPE spells each byte as one character, SentencePiece a space as one
    character; decoded text is never longer than the spelling)."""
    return max(len(token) for token in tokenizer.get_vocab())
