"""The backend interface callers use (CLI, server, eval): no caller knows which engine it drives.

Two implementations, both engine/driver.py Drivers: `engine.native.NativeEngine` (backend="native", the
PyTorch engine and the reference) and `engine.sglang.client.SGLangClient` (backend="sglang", tokens from a
SGLang server). `open_backend` chooses one; `MultiverseLM(..., backend=..., url=...)` (engine/api.py) holds what
it returns. Both give the same RequestOutput, tree, stats and stream events.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the CLIs import this module for their flags, before torch loads
    from engine.events import Event
    from engine.params import SamplingParams
    from engine.result import RequestOutput


@runtime_checkable
class Backend(Protocol):
    tokenizer: Any

    def generate(self, prompts: Any, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """One RequestOutput per prompt, in prompt order."""

    def stream(self, prompts: Any, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> Iterator[Event]:
        """BranchOpened / Tokens / BranchClosed / Merged / Finished events as decoding runs."""

    def abort(self, request_id: int) -> RequestOutput | None:
        """Finish a running request now; its result so far, or None if unknown."""

    def close(self) -> None:
        """Release connections and memory."""


def open_backend(model: Any = None, backend: str = "native", url: str | None = None, **options: Any) -> Any:
    """The implementation of `backend`: `open_backend(path)` or `open_backend(path, "sglang", url)`; `options`
    are the backend's (tokenizer=, device=, engine options; sglang: the client's). Returns an engine.driver.Driver."""
    if backend == "sglang":
        from engine.sglang.client import SGLangClient

        return SGLangClient(model, url=url, **options)
    if backend != "native":
        raise ValueError(f"backend {backend!r} is not available; use 'native' or 'sglang' (with url=...)")
    if url is not None:
        raise ValueError("url= is for backend='sglang'; the native backend runs the model in this process")
    from engine.native import NativeEngine

    return NativeEngine(model, **options)


def add_backend_arguments(parser: Any) -> None:
    """`--backend native|sglang` and `--url` for the CLIs (generate, serve, eval)."""
    parser.add_argument("--backend", choices=["native", "sglang"], default="native",
                        help="native: this process runs the model; sglang: a SGLang server decodes (with --url; "
                        "start it with SGLANG_PLUGINS=multiverse ... --radix-cache-backend multiverse --page-size 1)")
    parser.add_argument("--url", default=None, help="the SGLang server for --backend sglang, e.g. http://127.0.0.1:30000")


def remote_from_args(args: Any, model: Any, **structure: Any) -> Backend | None:
    """The SGLang client when the CLI asked for it (None: build the native engine as before)."""
    from multiverse.errors import UsageError

    if getattr(args, "backend", "native") != "sglang":
        if getattr(args, "url", None):
            raise UsageError("--url is for --backend sglang")
        return None
    if not args.url:
        raise UsageError("--backend sglang needs --url http://HOST:PORT of the SGLang server")
    return open_backend(model, "sglang", args.url, **{k: v for k, v in structure.items() if v is not None})
