"""Stop ids and stop strings, checked per branch on its own new tokens (strings may span token boundaries)."""
from __future__ import annotations

from collections.abc import Callable, Sequence


class StopChecker:
    def __init__(self, stop: Sequence[str], stop_ids: Sequence[int], decode: Callable[[list[int]], str]) -> None:
        self.stop, self.stop_ids, self.decode = tuple(stop), frozenset(stop_ids), decode
        # enough trailing tokens to hold the longest stop string (a token decodes to >= 1 character or a byte piece)
        self.window = max((len(s.encode()) for s in self.stop), default=0) + 1

    def __bool__(self) -> bool:
        return bool(self.stop or self.stop_ids)

    def check(self, tokens: list[int], start: int) -> str | None:
        """After tokens[-1] was appended: the stop that just completed (a string, or "id"), else None.

        Only tokens[start:] (the branch's generated tokens) count; a stop string is reported once, when the
        window including the newest token contains it and the same window without that token does not.
        """
        if tokens[-1] in self.stop_ids:
            return "id"
        if not self.stop:
            return None
        lo = max(start, len(tokens) - self.window)
        now = self.decode(tokens[lo:])
        before = self.decode(tokens[lo:-1])
        for s in self.stop:
            if s in now and s not in before:
                return s
        return None
