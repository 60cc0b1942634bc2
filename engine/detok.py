"""Token ids -> text: raw (every token visible), clean (special tokens other than the structure tags dropped,
e.g. `<|im_end|>`, `<|endoftext|>`), and incremental decoding for streams.

Incremental decoding keeps two offsets into the growing id list: text up to `read` has been delivered, and
the decode window starts at `prefix` (a few tokens before `read`, so a piece that only makes sense with its
left neighbour, or a multi-byte character split over tokens, decodes right). Each push decodes
O(window + new ids) tokens, never the whole text. A window ending in U+FFFD (an incomplete UTF-8 sequence)
delivers nothing until the next token completes it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

INCOMPLETE = "\ufffd"


class TextCodec:
    """The two decodings of one tokenizer; `hidden` = special ids that `clean` drops (tags stay)."""

    def __init__(self, tokenizer: Any, keep: Iterable[int] = ()) -> None:
        self.tokenizer = tokenizer
        special = set(getattr(tokenizer, "all_special_ids", ()))
        for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(int(tid))
        self.hidden = frozenset(special - set(keep))

    def raw(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def clean(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.hidden], skip_special_tokens=False)

    def incremental(self, clean: bool = True, holdback: int = 0) -> "IncrementalText":
        return IncrementalText(self.clean if clean else self.raw, holdback)


class IncrementalText:
    """The text of a growing id list as deltas that are never retracted.

    `holdback` characters at the end are withheld until `finish` (a stop string of length h+1 that may yet
    complete starts at most h characters before the end; see `Request.holdback`), so a stream never shows
    text that the final, stop-truncated text cuts. Use it at step boundaries, as a server does: after
    `step()`, a request that finished gets `finish(output.text)`, a running one `push(its new ids)`.
    """

    def __init__(self, decode: Callable[[list[int]], str], holdback: int = 0, lookback: int = 4) -> None:
        self.decode, self.holdback, self.lookback = decode, holdback, lookback
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far (complete characters only)
        self.sent = 0  # characters of `text` handed out
        self._prefix = 0  # decode window start (ids)
        self._read = 0  # ids whose text is in `text`

    def push(self, ids: Iterable[int]) -> str:
        """Append ids; return the newly deliverable text (maybe "")."""
        self.ids.extend(ids)
        if len(self.ids) > self._read:
            before = self.decode(self.ids[self._prefix : self._read])
            now = self.decode(self.ids[self._prefix :])
            if len(now) > len(before) and not now.endswith(INCOMPLETE):
                self.text += now[len(before) :]
                self._prefix = max(self._prefix, len(self.ids) - self.lookback)
                self._read = len(self.ids)
        return self._deliver(len(self.text) - self.holdback)

    def finish(self, final_text: str | None = None) -> str:
        """The rest, at the end of the request. `final_text` (e.g. `RequestOutput.text`, cut at its stop string)
        replaces the incremental text when given; it always extends what was already delivered."""
        if final_text is None:
            before = self.decode(self.ids[self._prefix : self._read])
            final_text = self.text + self.decode(self.ids[self._prefix :])[len(before) :]
        delivered = self.text[: self.sent]
        if not final_text.startswith(delivered):  # defensive: never retract; deliver what is new after it
            return final_text[self.sent :]
        self.text = final_text
        return self._deliver(len(final_text))

    def _deliver(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out = self.text[self.sent : upto]
        self.sent = upto
        return out
