"""The SGLang backend: `MultiverseLM(backend="sglang", url=...)` holds an SGLangClient (engine/backend.py).

It is a Driver (engine/driver.py) whose scheduler's forward is replaced by SGLang calls (scheduler.py, segments.py):
the same generate / stream / abort, RequestOutput, tree, stats and stream events. Merges are exact when the
server is SGLang with the `multiverse` plugin (its cache reuses the children's KV; stats count
`merges_exact`) or our own `multiverse serve` (every merge is re-laid out with the core's mask and positions:
exact tokens, counted `merges_recomputed`). A stock SGLang would recompute merges causally (siblings visible,
positions contiguous): refused unless `approximate=True`, and then every such merge is counted recomputed.

    lm = MultiverseLM("path/to/model-or-tokenizer", backend="sglang", url="http://127.0.0.1:30000")
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.driver import Driver, Prompt, eos_ids
from engine.kv_pool import KVPool
from engine.params import SamplingParams
from engine.request import Request
from engine.sglang.http import ServerError, Wire
from engine.sglang.scheduler import RemoteScheduler
from engine.sglang.segments import Segments
from multiverse.tags import StructureVocab


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
        **engine_options: Any,
    ) -> None:
        if url is None:
            raise ValueError('MultiverseLM(backend="sglang") needs url="http://HOST:PORT" of the server')
        config = EngineConfig.from_options(**engine_options)
        self.wire = Wire(url, timeout_s)
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
            tokenizer = _tokenizer(model, tokenizer, self.server.info)
        except BaseException:
            self.wire.close()
            raise
        self.approximate = not self.server.exact
        self.model, self.device = None, torch.device("cpu")
        vocab = StructureVocab.from_tokenizer(tokenizer)
        eos = _eos_ids(model, tokenizer)
        pool = KVPool(1, 1, 1, config.num_pages, config.page_size, torch.float32, "cpu")  # slot accounting only
        codec = TextCodec(tokenizer, keep=vocab.tags.all())
        scheduler = RemoteScheduler(None, pool, config, vocab, eos, codec)  # type: ignore[arg-type]
        scheduler.segments = Segments(self.wire, vocab.tags, eos)
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
            from engine import controls

            asked = [k for k, v in controls.recorded(params).items() if v != controls.DEFAULTS[k]]
            if asked:  # refused by name rather than ignored: SGLang parity for these is not built yet
                raise ValueError(f"SamplingParams.{asked[0]}: the decoding controls run in the native engine only "
                                 f"(backend='sglang' does not have them yet); leave {', '.join(asked)} at the default")
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


def _tokenizer(model: Any, tokenizer: Any, info: dict[str, Any]) -> Any:
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    path = str(model) if model is not None else info.get("tokenizer_path") or info.get("model_path")
    if not path:
        raise ValueError("pass the model path (or tokenizer=) so the client can tokenize: the server did not name it")
    return AutoTokenizer.from_pretrained(path)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    generation = None
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        try:
            from transformers import GenerationConfig

            generation = GenerationConfig.from_pretrained(str(model))
        except (OSError, ValueError):
            pass
    return eos_ids(tokenizer, generation)
