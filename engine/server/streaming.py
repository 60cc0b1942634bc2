"""The text a client sees, streamed and final, from the engine's ids.

`TextStream.feed(ids)` gets the newly stable ids (final merged order) and returns the text that may be sent
now: decoded incrementally, minus a tail that could still become a stop string. `finish(final)` returns the
rest of the final text. Invariant: everything sent is a prefix of the final text.
"""
from __future__ import annotations

import logging
from typing import Any

from engine.result import RequestOutput
from engine.server.detok import IncrementalDetokenizer, StopHoldback

log = logging.getLogger("multiverse.serve")


class TextStream:
    def __init__(self, tokenizer: Any, stops: tuple[str, ...], skip_special_tokens: bool) -> None:
        self.detok = IncrementalDetokenizer(tokenizer, skip_special_tokens)
        self.holdback = StopHoldback(stops)
        self.sent = 0  # characters of detok.text already sent

    def feed(self, ids: list[int]) -> str:
        self.detok.add(ids)
        upto = self.holdback.releasable(self.detok.text)
        if upto <= self.sent:
            return ""
        piece, self.sent = self.detok.text[self.sent : upto], upto
        return piece

    def finish(self, final: str) -> str:
        sent = self.detok.text[: self.sent]
        if not final.startswith(sent):  # cannot happen while the hold-back covers every stop string
            log.warning("streamed text is not a prefix of the final text (%r vs %r)", sent[-40:], final[-40:])
            return ""
        return final[self.sent :]


def final_text(output: RequestOutput, stop: str | None, tokenizer: Any, skip_special_tokens: bool, keep_stop: bool) -> str:
    """The generated text, special tokens skipped or kept, ending where the stop string `stop` (the one that
    ended the request, if any) begins, or after it with `keep_stop`."""
    ids = output.token_ids
    text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    if not stop or output.finish_reason != "stop" or not ids:
        return text
    # the stop completed with the last token: its first occurrence that reaches into that token's text
    start = len(tokenizer.decode(ids[:-1], skip_special_tokens=skip_special_tokens))
    cut = text.find(stop, max(0, start - len(stop) + 1))
    return text if cut < 0 else text[: cut + (len(stop) if keep_stop else 0)]
