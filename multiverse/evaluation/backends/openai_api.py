"""`openai` backend: any OpenAI-compatible server (vLLM, SGLang, `multiverse serve`) through the `openai` client.

Requests run concurrently (a thread pool of `concurrency`); the client retries connection errors, 429 and 5xx
with backoff (`max_retries`). The server returns text only, so the structure, critical path and degree of
parallelism come from that text through the core, with the model's tokenizer. `skip_special_tokens: false` is
sent so that servers which strip special tokens by default (vLLM, SGLang) keep the structure tags.
The context length is the server's (`/models` max_model_len, SGLang's info routes), else the tokenizer's model's
config. A server that is not a Multiverse server counts `max_tokens` against the context, so there the total
budget is capped too (`caps_total`); a Multiverse server (`owned_by: multiverse`) caps only the critical path.
"""
from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from multiverse.errors import CommandError
from multiverse.evaluation.backends.base import Decoding, Generation, Prompt

FINISH = {"stop": "stop", "length": "length", "content_filter": "abort", None: "abort"}
DEFAULT_EXTRA: dict[str, Any] = {"skip_special_tokens": False}


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        served_model: str | None = None,
        api_key: str = "EMPTY",
        concurrency: int = 8,
        max_retries: int = 3,
        timeout_s: float = 600.0,
        extra_body: dict[str, Any] | None = None,
        model_dir: str | None = None,
    ) -> None:
        import openai

        from multiverse.evaluation.context import from_directory, from_server

        self.url, self.tokenizer, self.concurrency = url, tokenizer, concurrency
        self.extra_body = DEFAULT_EXTRA if extra_body is None else extra_body
        self.client = openai.OpenAI(base_url=url, api_key=api_key, max_retries=max_retries, timeout=timeout_s)
        try:
            cards = self.client.models.list().data
        except openai.APIError as err:
            raise CommandError(f"--url {url}: the server does not answer /models ({err})") from err
        served = [m.id for m in cards]
        if served_model is not None and served_model not in served:
            raise CommandError(f"--served-model {served_model}: the server at {url} serves {served}")
        self.served_model = served_model or served[0]
        card = next(m for m in cards if m.id == self.served_model)
        self.caps_total = getattr(card, "owned_by", None) != "multiverse"
        self.context = from_server(url, self.served_model, api_key) or from_directory(model_dir, tokenizer)

    def generate(
        self, prompts: Sequence[Prompt], decodings: Sequence[Decoding], in_flight: int | None = None
    ) -> Iterator[tuple[int, Generation]]:
        """`concurrency` requests in flight (the pool's workers), each next one sent as soon as a worker is free."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, p, d): i for i, (p, d) in enumerate(zip(prompts, decodings))}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for f in futures:
                    f.cancel()

    def generate_all(self, prompts: Sequence[Prompt], decodings: Sequence[Decoding]) -> list[Generation]:
        out: list[Generation | None] = [None] * len(prompts)
        for i, gen in self.generate(prompts, decodings):
            out[i] = gen
        return out  # type: ignore[return-value]

    def _one(self, prompt: Prompt, d: Decoding) -> Generation:
        import openai

        extra = dict(self.extra_body)
        if d.max_critical_tokens is not None:
            extra["max_critical_tokens"] = d.max_critical_tokens  # the Multiverse budget; plain servers ignore it
        from engine.controls import DEFAULTS

        asked = {k: v for k, v in d.controls.items() if DEFAULTS.get(k) != v}
        if asked:  # `multiverse serve` reads them; a server that does not know them ignores the field
            extra["multiverse"] = asked
        common = dict(model=self.served_model, max_tokens=d.max_new_tokens, temperature=d.temperature, top_p=d.top_p,
                      seed=d.seed, extra_body=extra)
        start = time.perf_counter()
        try:
            if isinstance(prompt, str):
                reply = self.client.completions.create(prompt=prompt, **common)
                text = reply.choices[0].text
            else:
                reply = self.client.chat.completions.create(messages=prompt, **common)
                text = reply.choices[0].message.content or ""
        except openai.APIError as err:
            raise CommandError(f"{self.url}: request failed after retries: {err}") from err
        wall = time.perf_counter() - start
        ext = getattr(reply, "multiverse", None) or (reply.model_extra or {}).get("multiverse") or {}
        text = ext.get("raw_text") or text  # a server that cleans `content` keeps the raw text here
        reason = ext.get("finish_reason") or FINISH.get(reply.choices[0].finish_reason, reply.choices[0].finish_reason)
        tree = [
            {"label": b.get("label"), "depth": b.get("depth"), "tokens": b.get("num_tokens"), "finish_reason": b.get("finish_reason"),
             "mean_entropy": b.get("mean_entropy"), "max_entropy": b.get("max_entropy")}
            for b in ext.get("tree", [])
        ]
        stats = ext.get("stats") or {}
        gen = Generation.from_text(text, reason, self.tokenizer, wall, tree)
        return replace(gen, fork_proposals=int(stats.get("fork_proposals") or 0), fork_accepted=int(stats.get("fork_accepted") or 0))

    def sequential(self) -> "OpenAIBackend":
        raise CommandError("--compare-sequential needs the native or sglang backend (a server decodes as it was started)")

    def describe(self) -> dict[str, Any]:
        return {"backend": "openai", "url": self.url, "served_model": self.served_model, "concurrency": self.concurrency,
                "context_length": self.context.length, "context_source": self.context.source,
                "request_extra": self.extra_body}
