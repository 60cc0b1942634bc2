"""The Python API: MultiverseLM(model, tokenizer).generate(prompts, params) and .stream(...).

    from multiverse import MultiverseLM, SamplingParams
    lm = MultiverseLM("path/to/model")                      # or an already-loaded HF model + tokenizer
    out = lm.generate(["Solve ..."], SamplingParams(temperature=0))[0]
    out.text, out.token_ids, out.tree, out.stats
"""
from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from engine.config import EngineConfig
from engine.events import Event
from engine.kv_pool import KVPool
from engine.params import SamplingParams
from engine.request import Phase, Request
from engine.result import RequestOutput
from engine.runner import ModelRunner
from engine.scheduler import Scheduler
from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab

Prompt = str | list[int] | list[dict[str, str]]


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
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731 - tags stay visible
        self.scheduler = Scheduler(
            ModelRunner(self.model, self.pool, self.device), self.pool, self.config, self.vocab, _eos_ids(model, tokenizer), decode
        )
        self._ids = itertools.count()

    # ------------------------------------------------------------------ public
    def generate(
        self, prompts: Prompt | Sequence[Prompt], sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in prompt order."""
        requests = self._submit(prompts, sampling_params)
        try:
            while any(r.phase is not Phase.FINISHED for r in requests):
                self.scheduler.step()
        except BaseException:
            self._abandon()  # e.g. a logits processor raised: free everything, then let the error through
            raise
        return [r.output for r in requests]

    def stream(
        self, prompts: Prompt | Sequence[Prompt], sampling_params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> Iterator[Event]:
        """Yield BranchOpened / Tokens / BranchClosed / Merged / Restarted / Finished events as steps run."""
        requests = self._submit(prompts, sampling_params)
        mine = {r.request_id for r in requests}
        self.scheduler.events = []
        try:
            while any(r.phase is not Phase.FINISHED for r in requests):
                self.scheduler.step()
                events, self.scheduler.events = self.scheduler.events, []
                yield from (e for e in events if e.request_id in mine)
        finally:
            self.scheduler.events = None
            for r in requests:  # a consumer that stops early aborts its requests: nothing leaks
                if r.phase is not Phase.FINISHED:
                    self.scheduler.abort(r.request_id)

    def _abandon(self) -> None:
        """After an error inside a step, the step's state is unknown: finish every request, free every page."""
        for request in list(self.scheduler.waiting) + list(self.scheduler.running):
            self.scheduler.abort(request.request_id)  # _finish clears every branch's pending tokens

    def abort(self, request_id: int) -> RequestOutput | None:
        request = self.scheduler.abort(request_id)
        return request.output if request is not None else None

    def close(self) -> None:
        """Release what the backend holds (native: nothing beyond memory)."""

    def check_integrity(self) -> None:
        self.scheduler.check_integrity()

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        if prompt and all(isinstance(m, dict) for m in prompt):
            text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if all(isinstance(t, int) and 0 <= t < len(self.tokenizer) for t in prompt):
            return list(prompt)
        raise TypeError("a prompt is a string, a list of token ids in the vocabulary, or a list of chat messages")

    # ------------------------------------------------------------------ internals
    def _submit(self, prompts: Any, params: Any) -> list[Request]:
        prompts = [prompts] if _is_single(prompts) else list(prompts)
        if params is None:
            params = SamplingParams()
        plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} sampling params for {len(prompts)} prompts; give one, or one per prompt")
        requests = []
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            ids = self.encode_prompt(prompt)
            if not ids:
                raise ValueError(f"prompt {i} encodes to no tokens")
            seed = p.seed if p.seed is not None else secrets.randbits(62)
            request = Request(next(self._ids), ids, p, seed, self._rules(p))
            self.scheduler.add(request)
            requests.append(request)
        return requests

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


__all__ = ["EngineConfig", "MultiverseLM", "RequestOutput", "SamplingParams"]
