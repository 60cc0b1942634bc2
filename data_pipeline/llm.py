"""The LLM client: any OpenAI-compatible endpoint, with a concurrency limit, a rate limiter, retries, a cache
and JSON checks.

Call flow of `ask_json`: cache lookup -> (semaphore -> rate limiter -> HTTP request, the whole call bounded by
`llm.timeout`) with retries and exponential backoff on retryable failures -> cache store -> JSON extraction ->
JSON-schema validation.
Retryable: HTTP 408, 409, 429 and 5xx, timeouts, dropped connections (a Retry-After header is honoured).
Permanent: every other status (400 "context length" or bad request, 401, 403, 404, 422): EndpointError with
`retryable=False` at once, never sent again by a later run (unless it is asked to retry failed samples).
A reply that is not the JSON asked for raises ReplyError carrying the reason (the stage asks again with it).
"""
from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai

from data_pipeline.cache import ResponseCache, cache_key
from data_pipeline.config import LLMConfig, RunConfig
from data_pipeline.ratelimit import RateLimiter
from data_pipeline.replies import ReplyError, parse_json_reply
from data_pipeline.schemas import strict

__all__ = ["LLM", "CallStats", "EndpointError", "Reply", "ReplyError", "parse_json_reply"]

_RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every status >= 500


class EndpointError(Exception):
    """The endpoint failed for good: a permanent status (`retryable` False), or retries exhausted (True)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Reply:
    """A reply's text and the tokens it cost (from the endpoint's `usage`; 0 when it sends none)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CallStats:
    """Counters of one process (never part of the data set: a resumed run counts differently)."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0  # of this process's requests (cache hits cost nothing)
    completion_tokens: int = 0
    rate_limited_s: float = 0.0
    transport_errors: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "rate_limited_s": round(self.rate_limited_s, 2),
            "transport_errors": dict(sorted(self.transport_errors.items())),
        }


class LLM:
    """One client per run; `ask_json` is safe to call from many tasks at once."""

    def __init__(self, cfg: LLMConfig, run: RunConfig, cache: ResponseCache, seed: int = 0) -> None:
        self.cfg = cfg
        self.run = run
        self.cache = cache
        self.stats = CallStats()
        self.client = openai.AsyncOpenAI(
            base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.timeout, max_retries=0
        )
        self._gate = asyncio.Semaphore(run.concurrency)
        self._limiter = RateLimiter(run.rpm, run.tpm, run.rate_window)
        self._jitter = random.Random(seed)

    async def close(self) -> None:
        await self.client.close()

    async def ask_json(
        self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], attempt: int, round_: int = 0
    ) -> tuple[dict[str, Any], Reply]:
        """The validated JSON object and the reply. Raises ReplyError or EndpointError."""
        reply = await self.complete(messages, name, schema, attempt, round_)
        try:
            return parse_json_reply(reply.text, schema), reply
        except ReplyError as err:
            err.usage = reply
            raise

    async def complete(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], attempt: int,
                       round_: int = 0) -> Reply:
        """`round_` > 0: a retry of a failed sample (--retry-failed) asks afresh instead of replaying the cache."""
        assert self.cfg.model is not None
        params = self.cfg.sampling() | {"response_format": self.cfg.structured_output, "schema": name}
        if round_:
            params["round"] = round_
        key = cache_key(self.cfg.model, messages, params, attempt)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return Reply(cached["reply"], *cached.get("usage", (0, 0)))
        reply = await self._request(messages, name, schema)
        self.cache.put(key, reply.text, (reply.prompt_tokens, reply.completion_tokens))
        return reply

    async def _request(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any]) -> Reply:
        delay = self.run.backoff_initial
        estimate = sum(len(m["content"]) for m in messages) // 4  # tokens, until the reply's usage says
        for retry in range(self.run.max_retries + 1):
            try:
                async with self._gate:
                    booking = await self._limiter.acquire(estimate)
                    self.stats.requests += 1
                    response = await asyncio.wait_for(
                        self.client.chat.completions.create(**self._body(messages, name, schema)),
                        timeout=self.cfg.timeout)
                reply = _reply(response)
                self._limiter.settle(booking, reply.prompt_tokens + reply.completion_tokens or estimate)
                self.stats.prompt_tokens += reply.prompt_tokens
                self.stats.completion_tokens += reply.completion_tokens
                self.stats.rate_limited_s = self._limiter.waited
                _check_finish(response, reply)
                return reply
            except (asyncio.TimeoutError, openai.APITimeoutError, openai.APIConnectionError,
                    openai.APIStatusError) as err:
                kind = _kind(err)
                self.stats.transport_errors[kind] += 1
                if not _retryable(err):
                    raise EndpointError(f"{kind} (permanent, not retried): {_message(err)}", retryable=False) from err
                if retry == self.run.max_retries:
                    raise EndpointError(f"{kind} after {retry + 1} tries: {_message(err)}", retryable=True) from err
                self.stats.retries += 1
                await asyncio.sleep(self._wait(err, delay))
                delay = min(delay * 2, self.run.backoff_max)
        raise AssertionError("unreachable")

    def _body(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "messages": messages, **self.cfg.sampling()}
        if self.cfg.structured_output == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": name, "schema": strict(schema), "strict": True}}
        elif self.cfg.structured_output == "json_object":
            body["response_format"] = {"type": "json_object"}
        if self.cfg.extra_body:
            body["extra_body"] = dict(self.cfg.extra_body)
        return body

    def _wait(self, err: Exception, delay: float) -> float:
        """Backoff with jitter, capped at backoff_max; a server's Retry-After wins when it asks for longer."""
        wait = min(delay * self._jitter.uniform(0.5, 1.0), self.run.backoff_max)
        return max(wait, retry_after(err) or 0.0)


def retry_after(err: Exception) -> float | None:
    """Seconds from the Retry-After (or retry-after-ms) header of an HTTP error reply, capped at 10 minutes."""
    response = getattr(err, "response", None)
    headers = response.headers if response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            if headers.get(name):
                return min(float(headers[name]) * scale, 600.0)
        except ValueError:
            continue  # an HTTP date: fall back to our backoff
    return None


def _retryable(err: Exception) -> bool:
    if isinstance(err, openai.APIStatusError):
        return err.status_code in _RETRYABLE_STATUS or err.status_code >= 500
    return True  # timeouts and connection failures


def _kind(err: Exception) -> str:
    if isinstance(err, (asyncio.TimeoutError, openai.APITimeoutError)):
        return "timeout"
    if isinstance(err, openai.APIStatusError):
        return f"http_{err.status_code}"
    return "connection"


def _message(err: Exception) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "no complete reply within llm.timeout"
    return getattr(err, "message", None) or str(err) or type(err).__name__


def _reply(response: Any) -> Reply:
    usage = getattr(response, "usage", None)
    choice = response.choices[0] if response.choices else None
    text = (choice.message.content or "") if choice is not None else ""
    return Reply(text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))


def _check_finish(response: Any, reply: Reply) -> None:
    if not response.choices:
        raise ReplyError("the endpoint returned no choices")
    if response.choices[0].finish_reason == "length":
        err = ReplyError("the reply was cut off at max_tokens; answer more briefly", reply.text)
        err.usage = reply
        raise err
