"""A requests-per-window and tokens-per-window limiter over a sliding window (`run.rpm`, `run.tpm`).

Invariant: inside any window of `window` seconds, at most `rpm` requests start, and the tokens booked by
requests that started in it stay within `tpm` (a single request larger than `tpm` may start only into an empty
window). A request books an estimate of its tokens when it starts; `settle` replaces the estimate with the
reply's `usage` total when it returns. Waiters are served in arrival order (one lock).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable


class Booking:
    """One started request: when it started and the tokens it counts for."""

    __slots__ = ("at", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at, self.tokens = at, tokens


class RateLimiter:
    def __init__(self, rpm: int | None, tpm: int | None, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm, self.tpm, self.window, self.clock = rpm, tpm, window, clock
        self._booked: deque[Booking] = deque()  # in start order
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting, summed over requests

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    async def acquire(self, tokens: int) -> Booking:
        """Wait until a request of about `tokens` tokens may start; returns its booking."""
        async with self._lock:
            while True:
                now = self.clock()
                while self._booked and self._booked[0].at <= now - self.window:
                    self._booked.popleft()
                wait = self._wait(now, tokens)
                if wait <= 0:
                    booking = Booking(now, tokens)
                    self._booked.append(booking)
                    return booking
                self.waited += wait
                await asyncio.sleep(wait)

    def settle(self, booking: Booking, tokens: int) -> None:
        booking.tokens = tokens

    def _wait(self, now: float, tokens: int) -> float:
        """Seconds until the oldest bookings that block this request leave the window (0: it may start)."""
        booked = list(self._booked)
        wait = 0.0
        if self.rpm and len(booked) >= self.rpm:
            wait = booked[len(booked) - self.rpm].at + self.window - now
        if self.tpm and booked:
            total = sum(b.tokens for b in booked)
            for b in booked:
                if total + tokens <= self.tpm:
                    break
                total -= b.tokens
                wait = max(wait, b.at + self.window - now)
        return wait
