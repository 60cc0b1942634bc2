"""The SGLang client's frozen options: how long a call may take and what happens when one fails.

A segment is decoded in calls of at most `call_tokens` new tokens (a long sequential stretch becomes several
calls, each on the branch's visible ids so far: greedy tokens are the same however a stretch is cut, and the
server's prefix cache makes every call after the first a cheap extend). Choose `call_tokens` so that one call
(call_tokens / per-sequence tokens per second, plus its prefill) stays well under `timeout_s`: the default
512 tokens take ~17 s at 30 tokens/s and ~100 s at 5 tokens/s, against a 600 s timeout.

A call that times out, cannot connect or gets a 5xx answer is sent again (same ids, same sampling: the same
tokens) up to `retries` times, `retry_wait_s` * 2**attempt apart; if it still fails, only the requests with an
input in that call end, with finish_reason "error" and `error` naming the call and the cause.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientOptions:
    timeout_s: float = 600.0  # HTTP timeout of one /generate call (connect, read, write)
    call_tokens: int = 512  # new tokens one segment call may decode
    retries: int = 2  # times a failed call is sent again (timeouts, connection errors, 5xx)
    retry_wait_s: float = 0.5  # wait before the first retry; doubled for each next one
    approximate: bool = False  # accept a stock SGLang (no plugin): merges recomputed causally

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"sglang timeout_s must be > 0 seconds, got {self.timeout_s}")
        if isinstance(self.call_tokens, bool) or not isinstance(self.call_tokens, int) or self.call_tokens < 1:
            raise ValueError(f"sglang call_tokens must be an integer >= 1, got {self.call_tokens!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"sglang retries must be an integer >= 0, got {self.retries!r}")
        if not self.retry_wait_s >= 0:
            raise ValueError(f"sglang retry_wait_s must be >= 0 seconds, got {self.retry_wait_s}")


__all__ = ["ClientOptions"]
