"""The LLM client: any OpenAI-compatible endpoint, with a concurrency limit, retries, a cache and JSON checks.

Call flow of `ask_json`: cache lookup -> (semaphore -> HTTP request) with retries and exponential backoff
on 429, 5xx, timeouts and dropped connections -> cache store -> JSON extraction -> JSON-schema validation.
Transport failures that survive every retry raise EndpointError; a reply that is not the JSON asked for
raises ReplyError carrying the reason (the stage then asks again with that reason in the prompt).
"""
from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import openai

from data_pipeline.cache import ResponseCache, cache_key
from data_pipeline.config import LLMConfig, RunConfig

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class ReplyError(Exception):
    """A reply that cannot be used; `reason` goes back to the model, `reply` is what it said."""

    def __init__(self, reason: str, reply: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class EndpointError(Exception):
    """The endpoint failed for good (a non-retryable status, or retries exhausted)."""


@dataclass
class CallStats:
    """Counters of one run (never part of the data set: a resumed run counts differently)."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    transport_errors: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
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
        self._jitter = random.Random(seed)

    async def close(self) -> None:
        await self.client.close()

    async def ask_json(
        self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], attempt: int
    ) -> tuple[dict[str, Any], str]:
        """The validated JSON object and the raw reply text. Raises ReplyError or EndpointError."""
        text = await self.complete(messages, name, schema, attempt)
        return parse_json_reply(text, schema), text

    async def complete(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], attempt: int) -> str:
        assert self.cfg.model is not None
        params = self.cfg.sampling() | {"response_format": self.cfg.structured_output, "schema": name}
        key = cache_key(self.cfg.model, messages, params, attempt)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        text = await self._request(messages, name, schema)
        self.cache.put(key, text)
        return text

    async def _request(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any]) -> str:
        delay = self.run.backoff_initial
        for retry in range(self.run.max_retries + 1):
            try:
                async with self._gate:
                    self.stats.requests += 1
                    response = await self.client.chat.completions.create(**self._body(messages, name, schema))
                return _content(response)
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError) as err:
                kind = _kind(err)
                self.stats.transport_errors[kind] += 1
                if retry == self.run.max_retries:
                    raise EndpointError(f"{kind} after {retry + 1} tries: {err}") from err
                self.stats.retries += 1
                await asyncio.sleep(self._wait(err, delay))
                delay = min(delay * 2, self.run.backoff_max)
            except openai.APIStatusError as err:
                raise EndpointError(f"HTTP {err.status_code} from the endpoint: {err.message}") from err
        raise AssertionError("unreachable")

    def _body(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "messages": messages, **self.cfg.sampling()}
        if self.cfg.structured_output == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        elif self.cfg.structured_output == "json_object":
            body["response_format"] = {"type": "json_object"}
        if self.cfg.extra_body:
            body["extra_body"] = dict(self.cfg.extra_body)
        return body

    def _wait(self, err: Exception, delay: float) -> float:
        """Backoff with jitter; a server's Retry-After wins when it asks for longer (capped)."""
        wait = delay * self._jitter.uniform(0.5, 1.0)
        response = getattr(err, "response", None)
        after = response.headers.get("retry-after") if response is not None else None
        try:
            wait = max(wait, float(after)) if after else wait
        except ValueError:
            pass
        return min(wait, self.run.backoff_max)


def _kind(err: Exception) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "timeout"
    if isinstance(err, openai.APIStatusError):
        return f"http_{err.status_code}"
    return "connection"


def _content(response: Any) -> str:
    choice = response.choices[0] if response.choices else None
    if choice is None:
        raise ReplyError("the endpoint returned no choices")
    text = choice.message.content or ""
    if choice.finish_reason == "length":
        raise ReplyError("the reply was cut off at max_tokens; answer more briefly", text)
    return text


def parse_json_reply(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON object in `text` (a code fence around it is tolerated), checked against `schema`."""
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as err:
        raise ReplyError(f"the reply is not valid JSON ({err.msg} at character {err.pos})", text) from err
    try:
        jsonschema.Draft202012Validator(schema).validate(obj)  # the schemas are ours: no check_schema per call
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "the top level"
        raise ReplyError(f"the JSON does not match the schema at {where}: {err.message}", text) from err
    return obj
