"""The Python API: MultiverseLM(model, tokenizer).generate(prompts, params) and .stream(...).

    from multiverse import MultiverseLM, SamplingParams
    lm = MultiverseLM()                                     # the default model; or a path, or a loaded model + tokenizer
    out = lm.generate(["Solve ..."], SamplingParams())[0]   # a string is a user turn (chat template); raw=True: as is
    out.text, out.raw_text, out.token_ids, out.tree, out.stats
    lm = MultiverseLM("path/to/model", backend="sglang", url="http://127.0.0.1:30000")   # tokens from a server

MultiverseLM is one front over a backend that engine/backend.py chooses (`lm.backend`: engine/native.py's
NativeEngine, or engine/sglang/client.py's SGLangClient); every backend is an engine/driver.py Driver, so the
contract below holds for all of them.

Prompts: a string becomes one user turn through the tokenizer's chat template whenever it has one (as `multiverse
generate` does); `raw=True` (submit, generate, stream, encode_prompt) tokenises it as it is. Chat messages always
go through the template; token ids are taken as they are. Threads: `threads=None` applies the commands' rule (one
torch intra-op thread for a model under 50M parameters, multiverse/threads.py), `threads=N` sets N.

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

from collections.abc import Iterator, Sequence
from typing import Any

from engine.backend import open_backend
from engine.config import EngineConfig
from engine.driver import Driver, Prompt, Sink
from engine.events import Event
from engine.params import SamplingParams
from engine.request import Request
from engine.result import RequestOutput
from engine.scheduler import EngineError


class MultiverseLM:
    """`MultiverseLM(model, tokenizer=None, device=None, backend="native", **options)`.

    backend "native": `options` are EngineConfig keys (engine/config.py); "sglang": `url=` of the server plus
    the client's options (engine/sglang/client.py). Attributes the API does not name (the native `model`,
    `pool`; the client's `server`) are the backend's, read through.
    """

    def __init__(
        self, model: Any = None, tokenizer: Any = None, device: Any = None, backend: str = "native",
        threads: int | None = None, **options: Any,
    ) -> None:
        if model is None and tokenizer is None and backend == "native":  # the shipped default model, as the commands
            # use (a SGLang client without a path reads the tokenizer from the server)
            from multiverse.demo import DEFAULT_MODEL

            model = str(DEFAULT_MODEL)
        if backend == "native":
            options["threads"] = threads  # with sglang the server decodes: its threads are its own
        self.backend: Driver = open_backend(model, backend, tokenizer=tokenizer, device=device, **options)

    # the backend's shared state
    tokenizer = property(lambda self: self.backend.tokenizer)
    config: EngineConfig = property(lambda self: self.backend.config)  # type: ignore[assignment]
    vocab = property(lambda self: self.backend.vocab)
    codec = property(lambda self: self.backend.codec)
    scheduler = property(lambda self: self.backend.scheduler)

    def __getattr__(self, name: str) -> Any:  # only for names not found on MultiverseLM itself
        if name == "backend":  # not built yet (its constructor raised)
            raise AttributeError(name)
        return getattr(self.backend, name)

    # ------------------------------------------------------------------ per-request API
    def submit(
        self, prompt: Prompt, params: SamplingParams | None = None, sink: Sink | None = None, *, raw: bool = False
    ) -> Request:
        """Validate and queue ONE request; its events go to `sink` (called on the stepping thread).

        Raises ValueError/TypeError naming the field (prompt type, empty prompt, a token id outside the
        vocabulary, a chat template that rejects the messages, params) and then adds nothing.
        """
        return self.backend.submit(self.backend.as_chat(prompt, raw), params, sink)

    def step(self) -> list[Request]:
        """One scheduler step; returns the requests that finished in it (any reason, "error" included).

        Raises `EngineError` only when the step's shared forward failed; the requests of that step have then
        finished with "error" and hold no pages, and the engine may be stepped again.
        """
        return self.backend.step()

    def has_work(self) -> bool:
        return self.backend.has_work()

    def abort(self, request_id: int) -> RequestOutput | None:
        """Finish a waiting or running request now with "abort": every KV page it held is free on return and
        its sink gets Finished. None when no such unfinished request exists."""
        return self.backend.abort(request_id)

    # ------------------------------------------------------------------ batch API on top of it
    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        raw: bool = False,
        **backend_options: Any,
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in prompt order. Every prompt and params is checked before any runs
        (an error names its index); a request that fails while running ends alone with finish_reason "error".
        `backend_options`: the backend's extras (sglang: `server_processors=`)."""
        return self.backend.generate(self._chat_all(prompts, raw), sampling_params, **backend_options)

    def stream(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        raw: bool = False,
    ) -> Iterator[Event]:
        """Yield BranchOpened / Tokens / BranchClosed / Merged / Restarted / Finished events of these prompts
        as steps run. Each call has its own buffer, so interleaved streams do not disturb each other; every
        request's Finished is yielded, also for one the consumer aborted; closing the iterator early aborts
        what is unfinished."""
        return self.backend.stream(self._chat_all(prompts, raw), sampling_params)

    def close(self) -> None:
        """Release what the backend holds (native: nothing beyond memory; sglang: its connections)."""
        self.backend.close()

    def check_integrity(self) -> None:
        self.backend.check_integrity()

    def encode_prompt(self, prompt: Prompt, max_chars: int | None = None, *, raw: bool = False) -> list[int]:
        """Token ids of a prompt: text (a user turn unless raw), chat messages (the template), or ids in the
        vocabulary. With max_chars, text longer than that (after the chat template) raises PromptTooLong untokenized."""
        return self.backend.encode_prompt(prompt, max_chars, raw=raw)

    def _chat_all(self, prompts: Any, raw: bool) -> Any:
        """Driver.as_chat on one prompt, or on each prompt of a batch (a list holding any string is a batch)."""
        if isinstance(prompts, (list, tuple)) and any(isinstance(p, str) for p in prompts):
            return [self.backend.as_chat(p, raw) for p in prompts]
        return self.backend.as_chat(prompts, raw)


__all__ = ["EngineConfig", "EngineError", "MultiverseLM", "RequestOutput", "SamplingParams"]
