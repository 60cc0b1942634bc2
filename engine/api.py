"""The Python API: MultiverseLM(model, tokenizer).generate(prompts, params) and .stream(...).

    from multiverse import MultiverseLM, SamplingParams
    lm = MultiverseLM("path/to/model")                      # or an already-loaded HF model + tokenizer
    out = lm.generate(["Solve ..."], SamplingParams(temperature=0))[0]
    out.text, out.raw_text, out.token_ids, out.tree, out.stats

Per-request contract (what a server builds on; generate() and stream() are written on top of it):
- `submit(prompt, params=None, sink=None) -> Request` validates THIS request (prompt type, empty prompt, ids
  in the vocabulary, the chat template, params against the vocabulary) and raises ValueError/TypeError naming
  the field before anything is queued. Its events (engine/events.py) go to its own `sink`, in order, ending
  with exactly one Finished(output), whatever ends it (finish, abort, error).
- `step() -> list[Request]` runs one scheduler step and returns the requests that finished in it.
  `has_work()` says whether any request waits or runs.
- `abort(request_id) -> RequestOutput | None` finishes a waiting or running request with "abort"; every KV
  page it held (forked children included) is free when it returns; its sink gets Finished.
- Fault isolation: an exception caused by one request inside a step (its logits processor, its sampling, its
  stop check, its sink, its fork) finishes THAT request with finish_reason "error" (`RequestOutput.error` says
  why) and frees its pages; every other request of the step continues and writes the tokens it would have
  written alone. Only a failing forward is engine-wide: the step's requests end with "error" and step()
  raises `EngineError`; no page stays allocated and the engine can be stepped again.
- Not thread-safe: one thread calls submit/step/abort (a server's engine thread); sinks run on it.
"""
from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.events import Event
from engine.kv_pool import KVPool
from engine.params import SamplingParams
from engine.request import Phase, Request
from engine.result import RequestOutput
from engine.runner import ModelRunner
from engine.scheduler import EngineError, Scheduler
from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab

Prompt = str | list[int] | list[dict[str, str]]
Sink = Callable[[Event], None]


class MultiverseLM:
    def __new__(cls, *args: Any, backend: str = "native", **kwargs: Any) -> "MultiverseLM":
        if backend == "sglang" and cls is MultiverseLM:  # the SGLang client: same API, tokens from a server
            from engine.sglang.client import SGLangClient

            return super().__new__(SGLangClient)
        return super().__new__(cls)

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
        backend: str = "native",
        **engine_options: Any,
    ) -> None:
        if backend != "native":
            raise ValueError(f"backend {backend!r} is not available; use 'native' or 'sglang' (with url=...)")
        model, tokenizer = _load(model, tokenizer)
        self.config = EngineConfig.from_options(device=str(device) if device is not None else None, **engine_options)
        self.device = torch.device(self.config.device) if self.config.device else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        if self.config.dtype is not None:
            self.model.to(self.config.dtype)
        self.tokenizer = tokenizer
        self.vocab = StructureVocab.from_tokenizer(tokenizer)
        self.pool = _make_pool(self.model, self.config, self.device)
        self.codec = TextCodec(tokenizer, keep=self.vocab.tags.all())  # raw and clean text, incremental decoding
        self.scheduler = Scheduler(
            ModelRunner(self.model, self.pool, self.device), self.pool, self.config, self.vocab, _eos_ids(model, tokenizer), self.codec
        )
        self._ids = itertools.count()

    # ------------------------------------------------------------------ per-request API
    def submit(self, prompt: Prompt, params: SamplingParams | None = None, sink: Sink | None = None) -> Request:
        """Validate and queue ONE request; its events go to `sink` (called on the stepping thread).

        Raises ValueError/TypeError naming the field (prompt type, empty prompt, a token id outside the
        vocabulary, a chat template that rejects the messages, params) and then adds nothing.
        """
        request = self._prepare(prompt, params, sink)
        self.scheduler.add(request)
        return request

    def step(self) -> list[Request]:
        """One scheduler step; returns the requests that finished in it (any reason, "error" included).

        Raises `EngineError` only when the step's shared forward failed; the requests of that step have then
        finished with "error" and hold no pages, and the engine may be stepped again.
        """
        return self.scheduler.step()

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def abort(self, request_id: int) -> RequestOutput | None:
        """Finish a waiting or running request now with "abort": every KV page it held is free on return and
        its sink gets Finished. None when no such unfinished request exists."""
        request = self.scheduler.abort(request_id)
        return request.output if request is not None else None

    # ------------------------------------------------------------------ batch API on top of it
    def generate(
        self, prompts: Prompt | Sequence[Prompt], sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in prompt order. Every prompt and params is checked before any runs
        (an error names its index); a request that fails while running ends alone with finish_reason "error"."""
        requests = self._submit_all(prompts, sampling_params, None)
        try:
            while any(r.phase is not Phase.FINISHED for r in requests):
                self.scheduler.step()
        finally:
            self._abort_unfinished(requests)  # an engine-wide error or KeyboardInterrupt: nothing of ours stays
        return [r.output for r in requests]

    def stream(
        self, prompts: Prompt | Sequence[Prompt], sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> Iterator[Event]:
        """Yield BranchOpened / Tokens / BranchClosed / Merged / Restarted / Finished events of these prompts
        as steps run. Each call has its own buffer, so interleaved streams do not disturb each other; every
        request's Finished is yielded, also for one the consumer aborted; closing the iterator early aborts
        what is unfinished."""
        buffer: deque[Event] = deque()
        requests = self._submit_all(prompts, sampling_params, buffer.append)
        try:
            while True:
                while buffer:
                    yield buffer.popleft()
                if all(r.phase is Phase.FINISHED for r in requests):
                    return
                self.scheduler.step()
        finally:
            self._abort_unfinished(requests)

    def close(self) -> None:
        """Release what the backend holds (native: nothing beyond memory)."""

    def check_integrity(self) -> None:
        self.scheduler.check_integrity()

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: text, chat messages (the tokenizer's template), or ids in the vocabulary."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt: empty string")
            return list(self.tokenizer(prompt)["input_ids"])
        if not isinstance(prompt, (list, tuple)):
            raise TypeError(f"prompt: a string, a list of token ids or a list of chat messages, got {type(prompt).__name__}")
        if not prompt:
            raise ValueError("prompt: empty list")
        if all(isinstance(m, dict) for m in prompt):
            return self._encode_chat(list(prompt))
        vocab = len(self.tokenizer)
        for i, t in enumerate(prompt):
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"prompt[{i}]: token ids must be integers (or all items chat messages), got {t!r}")
            if not 0 <= t < vocab:
                raise ValueError(f"prompt[{i}]: token id {t} is not in the vocabulary (0..{vocab - 1})")
        return list(prompt)

    # ------------------------------------------------------------------ internals
    def _encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        for i, m in enumerate(messages):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise TypeError(f"prompt[{i}]: a chat message needs a string 'role' and a string 'content', got {m!r}")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - templates raise anything (e.g. jinja's TemplateError on role order)
            raise ValueError(f"prompt: the chat template rejected the messages: {err}") from err
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prepare(self, prompt: Prompt, params: SamplingParams | None, sink: Sink | None) -> Request:
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling params: expected SamplingParams, got {type(params).__name__}")
        params.check_vocab(len(self.tokenizer))
        ids = self.encode_prompt(prompt)
        if not ids:
            raise ValueError("prompt: encodes to no tokens")
        seed = params.seed if params.seed is not None else secrets.randbits(62)
        return Request(next(self._ids), ids, params, seed, self._rules(params), sink=sink)

    def _submit_all(self, prompts: Any, params: Any, sink: Sink | None) -> list[Request]:
        """Prepare every request first (an error names its index), then queue them all: all or nothing."""
        prompts = [prompts] if _is_single(prompts) else list(prompts)
        if params is None or isinstance(params, SamplingParams):
            plist = [params] * len(prompts)
        else:
            plist = list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} sampling params for {len(prompts)} prompts; give one, or one per prompt")
        requests = []
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            try:
                requests.append(self._prepare(prompt, p, sink))
            except (TypeError, ValueError) as err:
                raise type(err)(f"request {i}: {err}") from err
        for request in requests:
            self.scheduler.add(request)
        return requests

    def _abort_unfinished(self, requests: list[Request]) -> None:
        for r in requests:
            if r.phase is not Phase.FINISHED:
                self.scheduler.abort(r.request_id)

    def _rules(self, p: SamplingParams) -> StructureRules:
        tighter = lambda a, b: b if a is None else a if b is None else min(a, b)  # noqa: E731
        c = self.config
        return StructureRules(c.parallel, tighter(c.max_paths, p.max_paths), tighter(c.max_depth, p.max_depth))


def _is_single(prompts: Any) -> bool:
    if isinstance(prompts, str):
        return True
    items = list(prompts)
    return bool(items) and all(isinstance(x, (int, dict)) for x in items)


def _load(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    if isinstance(model, (str, Path)):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(model)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    elif tokenizer is None:
        raise ValueError("MultiverseLM(model, tokenizer): pass the tokenizer along with an already-loaded model")
    return model, tokenizer


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra} if extra is not None else set()
    return frozenset(ids)


def _make_pool(model: Any, config: EngineConfig, device: torch.device) -> KVPool:
    mc = model.config.get_text_config()
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    kv_heads = getattr(mc, "num_key_value_heads", None) or mc.num_attention_heads
    dtype = next(model.parameters()).dtype
    return KVPool(mc.num_hidden_layers, kv_heads, head_dim, config.num_pages, config.page_size, dtype, device)


__all__ = ["EngineConfig", "EngineError", "MultiverseLM", "RequestOutput", "SamplingParams"]
