"""The backend interface callers use (CLI, server, eval): no caller knows which engine it drives.

Two implementations: `MultiverseLM` (backend="native", the PyTorch engine and the reference) and
`engine.sglang.client.SGLangClient` (backend="sglang", tokens from a SGLang server); both come from
`MultiverseLM(..., backend=..., url=...)` and return the same RequestOutput, tree, stats and stream events.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

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


def open_backend(model: Any = None, backend: str = "native", url: str | None = None, **options: Any) -> Backend:
    """The one constructor callers use: `open_backend(path)` or `open_backend(path, "sglang", url)`."""
    from engine.api import MultiverseLM

    if backend == "sglang":
        return MultiverseLM(model, backend="sglang", url=url, **options)
    if url is not None:
        raise ValueError("url= is for backend='sglang'; the native backend runs the model in this process")
    return MultiverseLM(model, backend=backend, **options)
