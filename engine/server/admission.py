"""The bound on requests in flight: a request holds a ticket from the moment its body has arrived until its
response has gone out (stream included), so preparing, queued and decoding requests all count.

Only the event loop touches the count (the middleware and the routes run there): no lock is needed.
A full server answers 503 with `Retry-After`; nothing already admitted is touched.
"""
from __future__ import annotations

from typing import Any

from engine.server.errors import APIError
from engine.server.limits import Limits


class Admission:
    def __init__(self, limits: Limits, metrics: Any = None) -> None:
        self.limits, self.metrics = limits, metrics
        self.held = 0  # requests in flight (a /generate batch counts each input)

    def enter(self, n: int = 1) -> "Ticket":
        """A ticket for n requests, or APIError 503 (Retry-After) when they do not fit now."""
        ticket = Ticket(self)
        ticket.grow(n)
        return ticket

    def refusal(self, n: int) -> APIError:
        cap = self.limits.in_flight
        if n > cap:  # can never fit: retrying would not help
            return APIError(400, f"a batch of {n} inputs is more than this server ever holds at once ({cap} requests: "
                            f"--max-running + --max-waiting)", None, "batch_too_large")
        if self.metrics is not None:
            self.metrics.rejected("queue_full")
        return APIError(503, f"the server is full: it holds {self.held} of at most {cap} requests (--max-running + "
                        f"--max-waiting {self.limits.max_waiting}); retry after {self.limits.retry_after_s} s",
                        None, "queue_full", headers={"Retry-After": str(self.limits.retry_after_s)})

    def _set(self, held: int) -> None:
        self.held = held
        if self.metrics is not None:
            self.metrics.in_flight.set(held)


class Ticket:
    """The slots one HTTP request holds; `release()` (idempotent) gives them all back."""

    def __init__(self, admission: Admission) -> None:
        self.admission, self.count = admission, 0

    def grow(self, n: int) -> None:
        """Hold n more slots (a /generate batch holds one per input), or raise the 503/400 refusal."""
        a = self.admission
        if n > 0 and a.held + n > a.limits.in_flight:
            raise a.refusal(self.count + n)
        a._set(a.held + n)
        self.count += n

    def release(self) -> None:
        self.admission._set(self.admission.held - self.count)
        self.count = 0
