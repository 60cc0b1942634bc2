"""Stop ids and stop strings, checked per branch on its own new tokens (strings may span token boundaries).

Truncation rule (as vLLM and SGLang do): the text ends at the FIRST occurrence of the stop string in the
newly generated text, i.e. in the text of the last `StopHit.tail_tokens` tokens, which is where the check saw
it complete. Streaming rule: a stop string of length h+1 that has not completed yet starts at most h
characters before the end of the text, so a stream that withholds `holdback` characters never shows text the
final cut removes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopHit:
    string: str | None  # None: a stop token id
    tail_tokens: int  # the stop string lies within the decoded text of the branch's last `tail_tokens` tokens


class StopChecker:
    def __init__(self, stop: Sequence[str], stop_ids: Sequence[int], decode: Callable[[list[int]], str]) -> None:
        self.stop, self.stop_ids, self.decode = tuple(stop), frozenset(stop_ids), decode
        # enough trailing tokens to hold the longest stop string (a token decodes to >= 1 character or a byte piece)
        self.window = max((len(s.encode()) for s in self.stop), default=0) + 1

    def __bool__(self) -> bool:
        return bool(self.stop or self.stop_ids)

    @property
    def holdback(self) -> int:
        return holdback_for(self.stop)

    def check(self, tokens: list[int], start: int) -> StopHit | None:
        """After tokens[-1] was appended: the stop that just completed, else None.

        Only tokens[start:] (the branch's generated tokens) count; a stop string is reported once, when the
        window including the newest token contains it and the same window without that token does not.
        """
        if tokens[-1] in self.stop_ids:
            return StopHit(None, 1)
        if not self.stop:
            return None
        lo = max(start, len(tokens) - self.window)
        now = self.decode(tokens[lo:])
        before = self.decode(tokens[lo:-1])
        for s in self.stop:
            if s in now and s not in before:
                return StopHit(s, len(tokens) - lo)
        return None


def holdback_for(stop: Sequence[str]) -> int:
    """Characters a stream must withhold at the end of the text until the request finishes."""
    return max((len(s) for s in stop), default=1) - 1


def cut_at_stop(text: str, tail: str, hit: StopHit, keep: bool) -> str:
    """`text` ends with `tail` (the decoded last `hit.tail_tokens` ids): cut at the first occurrence of the stop
    string inside the tail (keeping the stop string itself when `keep`)."""
    if hit.string is None:
        return text
    at = text.find(hit.string, max(0, len(text) - len(tail)))
    if at < 0:  # the tail did not decode as a suffix (tokenizer clean-up): the last occurrence is the best guess
        at = text.rfind(hit.string)
    if at < 0:
        return text
    return text[: at + (len(hit.string) if keep else 0)]
