"""The wire: SGLang's native `/generate` on token ids, called from a background asyncio loop (httpx).

`GenerateCall` is one input of a batched call; `post_batch` sends many as ONE request body (SGLang schedules
them together) and returns one `Reply` per input. A call that times out, cannot connect or gets a 5xx is sent
again, unchanged, up to `retries` times (options.py); then `ServerError` names the url, the attempts and the
cause. `probe` tells which server answers: a SGLang with the `multiverse` cache backend (exact merges), our own
`multiverse serve` (exact: it lays complete blocks out with the core's mask), or a stock SGLang (merges would
be recomputed causally: approximate); `info["model_path"]` is the server's model (its `/model_info`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.sglang.options import ClientOptions


class ServerError(ConnectionError):
    """The server refused or failed a call (an OSError, like any unreachable service); the message names the url
    and the reason."""


@dataclass(frozen=True)
class GenerateCall:
    input_ids: list[int]
    sampling: dict[str, Any]
    return_logprob: bool = False
    custom_logit_processor: str | None = None


@dataclass(frozen=True)
class Reply:
    output_ids: list[int]
    logprobs: list[float | None]
    finish: dict[str, Any]  # SGLang's finish_reason: {"type": stop|length|abort, "matched"|"length"|"message": ...}
    prompt_tokens: int
    cached_tokens: int

    @property
    def aborted(self) -> str | None:
        return str(self.finish.get("message", "aborted")) if self.finish.get("type") == "abort" else None


@dataclass(frozen=True)
class ServerKind:
    name: str  # "plugin" | "native" | "stock"
    exact: bool  # merges reuse (or exactly re-lay) the children's KV
    info: dict[str, Any] = field(default_factory=dict)


class Wire:
    """An httpx.AsyncClient on a private event loop thread; `run(coro)` blocks the caller until it is done."""

    def __init__(self, url: str, options: ClientOptions = ClientOptions()) -> None:
        self.url, self.options = url.rstrip("/"), options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="multiverse-sglang-wire")
        self.thread.start()
        self.http = self.run(self._client(options.timeout_s))
        self.calls = 0  # batched /generate calls sent (re-sends not counted)
        self.resends = 0  # re-sends of a call that timed out, could not connect or got a 5xx

    async def _client(self, timeout_s: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout_s, limits=httpx.Limits(max_connections=64))

    def run(self, coro: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():
            self.run(self.http.aclose())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)

    # ------------------------------------------------------------------ calls
    def post_batch(self, calls: list[GenerateCall]) -> list[Reply]:
        return self.run(self._post_batch(calls)) if calls else []

    def post_batch_async(self, calls: list[GenerateCall]) -> "concurrent.futures.Future[list[Reply]]":
        """The same call without waiting: a future the caller polls or waits on."""
        return asyncio.run_coroutine_threadsafe(self._post_batch(calls), self.loop)

    async def _post_batch(self, calls: list[GenerateCall]) -> list[Reply]:
        """The call, sent again while it fails in a way a retry may cure (the same ids give the same tokens)."""
        o = self.options
        self.calls += 1
        for attempt in range(o.retries + 1):
            try:
                return await self._post_once(calls)
            except _Retryable as err:
                if attempt == o.retries:
                    raise ServerError(f"POST {self.url}/generate failed {attempt + 1} times; last: {err}") from err
                self.resends += 1
                await asyncio.sleep(o.retry_wait_s * 2**attempt)
        raise AssertionError("unreachable")

    async def _post_once(self, calls: list[GenerateCall]) -> list[Reply]:
        body: dict[str, Any] = {
            "input_ids": [c.input_ids for c in calls],
            "sampling_params": [c.sampling for c in calls],
            "return_logprob": [c.return_logprob for c in calls],
        }
        if any(c.custom_logit_processor for c in calls):
            body["custom_logit_processor"] = [c.custom_logit_processor for c in calls]
        try:
            response = await self.http.post("/generate", json=body)
        except httpx.TimeoutException as err:
            raise _Retryable(f"no answer within {self.options.timeout_s:g} s ({type(err).__name__})") from err
        except httpx.HTTPError as err:
            raise _Retryable(f"{type(err).__name__}: {err}") from err
        if 400 <= response.status_code < 500:  # SGLang fails a whole batch when one input is aborted
            if len(calls) > 1:  # find which: each input again on its own (one bad call never fails the others)
                singles = await asyncio.gather(*(self._post_batch([c]) for c in calls))
                return [one[0] for one in singles]
            return [Reply([], [], {"type": "abort", "message": _message(response)}, len(calls[0].input_ids), 0)]
        if response.status_code >= 500:
            raise _Retryable(f"answered {response.status_code}: {response.text[:500]}")
        if response.status_code != 200:
            raise ServerError(f"POST {self.url}/generate answered {response.status_code}: {response.text[:500]}")
        items = response.json()
        if not isinstance(items, list) or len(items) != len(calls):
            raise ServerError(f"POST {self.url}/generate: expected {len(calls)} results, got {str(items)[:200]}")
        return [_reply(item, c.return_logprob) for item, c in zip(items, calls)]

    def probe(self) -> ServerKind:
        return self.run(self._probe())

    async def _probe(self) -> ServerKind:
        try:
            # SGLang and multiverse serve: model_path, tokenizer_path (/get_model_info: SGLang's older name)
            model = await self._json("/model_info") or await self._json("/get_model_info")
            info = await self._json("/server_info")
            if "page_size" in info:
                exact = info.get("radix_cache_backend") == "multiverse" and info.get("page_size") == 1
                return ServerKind("plugin" if exact else "stock", exact, {**info, **model})
            models = await self._json("/v1/models")
        except httpx.HTTPError as err:
            raise ServerError(f"no server answers at {self.url}: {err!r}") from err
        cards = models.get("data", [])
        if any(isinstance(c, dict) and c.get("owned_by") == "multiverse" for c in cards):
            return ServerKind("native", True, {"models": cards, **model})
        raise ServerError(f"{self.url} is neither SGLang (/server_info) nor multiverse serve (/v1/models)")

    async def _json(self, path: str) -> dict[str, Any]:
        """The JSON object a GET answers, {} when the route is missing or the answer is not an object."""
        response = await self.http.get(path)
        try:
            data = response.json() if response.status_code == 200 else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


class _Retryable(Exception):
    """A failure a retry may cure: a timeout, a refused or dropped connection, a 5xx answer."""


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error.get("message", error) if isinstance(error, dict) else error)


def _reply(item: dict[str, Any], want_lp: bool) -> Reply:
    meta = item.get("meta_info", {})
    ids = list(item.get("output_ids") or [])
    lps = [row[0] for row in meta.get("output_token_logprobs") or []] if want_lp else []
    return Reply(ids, lps + [None] * (len(ids) - len(lps)), meta.get("finish_reason") or {"type": "length"},
                 int(meta.get("prompt_tokens", 0)), int(meta.get("cached_tokens", 0)))
