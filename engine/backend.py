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
    add_client_arguments(parser)


def add_client_arguments(parser: Any) -> None:
    """The SGLang client's options (engine/sglang/options.py), shared by generate, serve and eval."""
    parser.add_argument("--sglang-timeout", type=float, default=600.0, metavar="S",
                        help="--backend sglang: HTTP timeout of one /generate call in seconds (default 600)")
    parser.add_argument("--sglang-call-tokens", type=int, default=512, metavar="N",
                        help="--backend sglang: new tokens one call may decode; a longer stretch takes several calls, "
                        "so keep N / (tokens/s per sequence) well under --sglang-timeout (default 512)")
    parser.add_argument("--sglang-retries", type=int, default=2, metavar="N",
                        help="--backend sglang: times a call that timed out or got a 5xx is sent again; then only "
                        "the requests of that call end, with the cause in their error (default 2)")


def client_options(args: Any) -> dict[str, Any]:
    """The SGLang client's keyword options from parsed flags; UsageError for a value out of range."""
    from multiverse.errors import UsageError, check_at_least

    if not args.sglang_timeout > 0:
        raise UsageError(f"--sglang-timeout {args.sglang_timeout}: must be > 0 seconds")
    check_at_least("--sglang-call-tokens", args.sglang_call_tokens, 1)
    check_at_least("--sglang-retries", args.sglang_retries, 0)
    return {"timeout_s": args.sglang_timeout, "call_tokens": args.sglang_call_tokens, "retries": args.sglang_retries}


def remote_from_args(args: Any, model: Any, **structure: Any) -> Any:
    """A MultiverseLM on the SGLang client when the CLI asked for it (None: build the native engine as before)."""
    from engine.api import MultiverseLM
    from multiverse.errors import UsageError

    if getattr(args, "backend", "native") != "sglang":
        if getattr(args, "url", None):
            raise UsageError("--url is for --backend sglang")
        return None
    if not args.url:
        raise UsageError("--backend sglang needs --url http://HOST:PORT of the SGLang server")
    options = {k: v for k, v in structure.items() if v is not None}
    return MultiverseLM(model, backend="sglang", url=args.url, **options, **client_options(args))
