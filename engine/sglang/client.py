"""The SGLang backend: `MultiverseLM(backend="sglang", url=...)` holds an SGLangClient (engine/backend.py).

It is a Driver (engine/driver.py) whose scheduler's forward is replaced by SGLang calls (scheduler.py, segments.py):
the same generate / stream / abort, RequestOutput, tree, stats and stream events. Merges are exact when the
server is SGLang with the `multiverse` plugin (its cache reuses the children's KV; stats count
`merges_exact`) or our own `multiverse serve` (every merge is re-laid out with the core's mask and positions:
exact tokens, counted `merges_recomputed`). A stock SGLang would recompute merges causally (siblings visible,
positions contiguous): refused unless `approximate=True`, and then every such merge is counted recomputed.

    lm = MultiverseLM("path/to/model", backend="sglang", url="http://127.0.0.1:30000")
    lm = MultiverseLM(backend="sglang", url=URL, timeout_s=120, call_tokens=256)   # the server names its model

Options (options.py): `timeout_s` per HTTP call, `call_tokens` new tokens per segment call (a long sequential
stretch is several bounded calls), `retries` / `retry_wait_s` for a call that times out or gets a 5xx (then
only the requests of that call end, with the cause in `error`). Without a model path the tokenizer and the
end-of-sequence ids come from the server's model (model_files.py), so stops are the native engine's.

Decoding controls (engine/controls.py) as in the native engine: fork_bias (SGLang's logit_bias), fork_threshold
at temperature 0, max_concurrent_paths / path_rule (the native fork code holds paths back; tokens unchanged),
structure="constrained" (each call's `ebnf`: engine/grammar.py). merge="refresh", fork_threshold with sampling
and constrained with ignore_eos are refused by name (`refuse_controls` says why).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.driver import Driver, Prompt
from engine.kv_pool import KVPool
from engine.params import SamplingParams
from engine.request import Request
from engine.sglang.http import ServerError, Wire
from engine.sglang.model_files import client_eos_ids, client_tokenizer
from engine.sglang.options import ClientOptions
from engine.sglang.scheduler import RemoteScheduler
from engine.sglang.segments import Segments
from multiverse.tags import StructureVocab

REMOTE_PAGES = 65536  # client-side accounting pool when num_pages is unset (1M slots of 16: never the bound)


def refuse_controls(params: SamplingParams) -> None:
    """The decoding controls this backend cannot run as the native engine does, refused by name (the others go
    in each call: segments.py). fork_bias, max_concurrent_paths, path_rule and structure="constrained" work."""
    if params.merge == "refresh":
        raise ValueError(
            "SamplingParams.merge='refresh' runs in the native engine only: it re-encodes one block's paths causally "
            "inside a sequence whose other blocks keep the Multiverse layout, and the server lays out every block of "
            "a call from its tags (the plugin, multiverse serve) or none (stock SGLang); leave merge='reuse'")
    if params.fork_threshold is not None and not params.greedy:
        raise ValueError(
            "SamplingParams.fork_threshold with temperature > 0 runs in the native engine only: the gate needs "
            "p(<Parallel>) at temperature 1 and a redraw with the same uniform, and SGLang reports a sampled "
            "token's logprob at the request's temperature and draws anew; use temperature=0 (exact) or the native "
            "backend")
    if params.structure == "constrained" and params.ignore_eos:
        raise ValueError("SamplingParams.structure='constrained' with ignore_eos=True: on backend='sglang' the "
                         "grammar ends at an EOS (xgrammar's stop token), so it cannot be text; drop ignore_eos")


class ApproximateMergeRefused(ServerError):
    """The server cannot merge exactly (a stock SGLang without the multiverse plugin)."""


class SGLangClient(Driver):
    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        device: Any = None,
        url: str | None = None,
        approximate: bool = False,
        timeout_s: float = 600.0,
        call_tokens: int = 512,
        retries: int = 2,
        retry_wait_s: float = 0.5,
        **engine_options: Any,
    ) -> None:
        if url is None:
            raise ValueError('MultiverseLM(backend="sglang") needs url="http://HOST:PORT" of the server')
        config = EngineConfig.from_options(**engine_options)
        self.options = ClientOptions(timeout_s, call_tokens, retries, retry_wait_s, approximate)
        self.wire = Wire(url, self.options)
        try:
            self.server = self.wire.probe()
            if not self.server.exact and not approximate:
                raise ApproximateMergeRefused(
                    f"{url} is SGLang without the multiverse cache backend (radix_cache_backend="
                    f"{self.server.info.get('radix_cache_backend')!r}, page_size={self.server.info.get('page_size')}): "
                    "its merges would be recomputed causally (siblings visible, wrong positions). Start it with "
                    "SGLANG_PLUGINS=multiverse ... --radix-cache-backend multiverse --page-size 1, or pass "
                    "approximate=True to accept approximate merges (counted in stats.merges_recomputed)"
                )
            tokenizer = client_tokenizer(model, tokenizer, self.server.info)
            eos = client_eos_ids(model, tokenizer, self.server.info)
        except BaseException:
            self.wire.close()
            raise
        self.approximate = not self.server.exact
        self.model, self.device = None, torch.device("cpu")
        vocab = StructureVocab.from_tokenizer(tokenizer)
        pages = config.num_pages or REMOTE_PAGES  # slot accounting only: the server's own KV pool bounds the work
        pool = KVPool(1, 1, 1, pages, config.page_size, torch.float32, "cpu")
        codec = TextCodec(tokenizer, keep=vocab.tags.all())
        scheduler = RemoteScheduler(None, pool, config, vocab, eos, codec)  # type: ignore[arg-type]
        scheduler.segments = Segments(self.wire, vocab, eos, self.options.call_tokens)
        super().__init__(tokenizer, config, vocab, codec, scheduler)

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        server_processors: Sequence[tuple[str, dict] | None] | None = None,
    ):  # noqa: ANN201 - list[RequestOutput]
        """As Driver.generate; `server_processors[i]` = (SGLang custom_logit_processor, custom_params)."""
        self._pending_processors = list(server_processors) if server_processors is not None else None
        return super().generate(prompts, sampling_params)

    def close(self) -> None:
        self.wire.close()

    def _prepare(self, prompt: Prompt, params: SamplingParams | None, sink: Any) -> Request:
        if params is not None and isinstance(params, SamplingParams) and params.logits_processors:
            raise ValueError(
                "SamplingParams.logits_processors run inside the native engine; with backend='sglang' use a "
                "server-side processor (generate(..., server_processors=...); SGLang needs "
                "--enable-custom-logit-processor)"
            )
        if isinstance(params, SamplingParams):
            refuse_controls(params)
        return super()._prepare(prompt, params, sink)

    def _submit_all(self, prompts: Any, params: Any, sink: Any) -> list[Request]:
        requests = super()._submit_all(prompts, params, sink)
        extra, self._pending_processors = getattr(self, "_pending_processors", None), None
        if extra is not None:
            if len(extra) != len(requests):
                for r in requests:
                    self.scheduler.abort(r.request_id)
                raise ValueError(f"{len(extra)} server processors for {len(requests)} prompts")
            for request, processor in zip(requests, extra):
                if processor is not None:
                    self.scheduler.segments.processors[request.request_id] = processor
        return requests

