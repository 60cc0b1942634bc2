"""What every backend shares: the per-request API over a Scheduler, and generate/stream written on it.

A `Driver` owns a tokenizer, its structure vocabulary, a frozen EngineConfig, a TextCodec and a Scheduler; a
backend builds those (engine/native.py: the PyTorch forward; engine/sglang/client.py: SGLang `/generate` calls)
and inherits everything else. `MultiverseLM` (engine/api.py) holds one Driver chosen by engine/backend.py.

Every backend therefore keeps the one per-request contract written in engine/api.py (submit validates before
queueing, events end with one Finished, step returns what finished, abort frees, one stepping thread).
"""
from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.events import Event
from engine.kv_memory import KVPlan
from engine.params import SamplingParams
from engine.request import Phase, Request
from engine.result import RequestOutput
from engine.scheduler import Scheduler
from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab

Prompt = str | list[int] | list[dict[str, str]]
Sink = Callable[[Event], None]


class PromptTooLong(ValueError):
    """A prompt text longer than the caller's character cap; it was not tokenized."""

    def __init__(self, chars: int, limit: int) -> None:
        super().__init__(f"prompt: {chars} characters, more than the {limit} allowed")
        self.chars, self.limit = chars, limit


def _short_enough(text: str, max_chars: int | None) -> str:
    if max_chars is not None and len(text) > max_chars:
        raise PromptTooLong(len(text), max_chars)
    return text


class Driver:
    kv: KVPlan | None = None  # the KV pool's size and how it was chosen (None: a remote server owns the memory)
    max_positions: int | None = None  # the model's position range (a native engine sets it); no request passes it

    def __init__(self, tokenizer: Any, config: EngineConfig, vocab: StructureVocab, codec: TextCodec, scheduler: Scheduler) -> None:
        self.tokenizer, self.config, self.vocab, self.codec, self.scheduler = tokenizer, config, vocab, codec, scheduler
        self._ids = itertools.count()

    # ------------------------------------------------------------------ per-request API
    def submit(self, prompt: Prompt, params: SamplingParams | None = None, sink: Sink | None = None) -> Request:
        """Validate and queue ONE request; its events go to `sink` (called on the stepping thread)."""
        request = self._prepare(prompt, params, sink)
        self.scheduler.add(request)
        return request

    def step(self) -> list[Request]:
        """One scheduler step; returns the requests that finished in it (any reason, "error" included)."""
        return self.scheduler.step()

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def abort(self, request_id: int) -> RequestOutput | None:
        """Finish a waiting or running request now with "abort"; None when no such unfinished request exists."""
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
        """Events of these prompts as steps run; each call has its own buffer; closing early aborts the rest."""
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

    def as_chat(self, prompt: Any, raw: bool) -> Any:
        """A non-empty string becomes one user turn when the tokenizer has a chat template and `raw` is False
        (MultiverseLM's default, as `multiverse generate`); a blank one becomes "" and is refused as empty."""
        if not isinstance(prompt, str) or raw or not getattr(self.tokenizer, "chat_template", None):
            return prompt
        return [{"role": "user", "content": prompt}] if prompt.strip() else ""

    def encode_prompt(self, prompt: Prompt, max_chars: int | None = None, raw: bool = True) -> list[int]:
        """Token ids of a prompt: text (as it is; a user turn with raw=False, see as_chat), chat messages (the
        tokenizer's template), or ids in the vocabulary. With max_chars, text longer than that (after the chat
        template) raises PromptTooLong untokenized. A Driver takes text raw; MultiverseLM's default is the chat turn."""
        prompt = self.as_chat(prompt, raw)
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt: empty string")
            return list(self.tokenizer(_short_enough(prompt, max_chars))["input_ids"])
        if not isinstance(prompt, (list, tuple)):
            raise TypeError(f"prompt: a string, a list of token ids or a list of chat messages, got {type(prompt).__name__}")
        if not prompt:
            raise ValueError("prompt: empty list")
        if all(isinstance(m, dict) for m in prompt):
            return self._encode_chat(list(prompt), max_chars)
        vocab = len(self.tokenizer)
        for i, t in enumerate(prompt):
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"prompt[{i}]: token ids must be integers (or all items chat messages), got {t!r}")
            if not 0 <= t < vocab:
                raise ValueError(f"prompt[{i}]: token id {t} is not in the vocabulary (0..{vocab - 1})")
        return list(prompt)

    # ------------------------------------------------------------------ internals
    def _encode_chat(self, messages: list[dict[str, Any]], max_chars: int | None = None) -> list[int]:
        for i, m in enumerate(messages):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise TypeError(f"prompt[{i}]: a chat message needs a string 'role' and a string 'content', got {m!r}")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - templates raise anything (e.g. jinja's TemplateError on role order)
            raise ValueError(f"prompt: the chat template rejected the messages: {err}") from err
        return list(self.tokenizer(_short_enough(text, max_chars), add_special_tokens=False)["input_ids"])

    def _prepare(self, prompt: Prompt, params: SamplingParams | None, sink: Sink | None) -> Request:
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling params: expected SamplingParams, got {type(params).__name__}")
        params.check_vocab(len(self.tokenizer))
        ids = self.encode_prompt(prompt)
        if not ids:
            raise ValueError("prompt: encodes to no tokens")
        if self.max_positions is not None and len(ids) >= self.max_positions:
            raise ValueError(
                f"prompt: {len(ids)} tokens leave no position for a completion in the model's context of "
                f"{self.max_positions} positions (max_position_embeddings)"
            )
        if self.kv is not None and (why := self.kv.refusal(len(ids))):
            raise ValueError(f"prompt: {why}")
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


def eos_ids(tokenizer: Any, generation_config: Any = None) -> frozenset[int]:
    """End-of-sequence ids: the tokenizer's eos plus the generation config's `eos_token_id` (an int or a list)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra} if extra is not None else set()
    return frozenset(i for i in ids if i is not None)


__all__ = ["Driver", "Prompt", "Sink", "eos_ids"]
