"""Backends of `multiverse eval`: `native` (our engine), `sglang` (through MultiverseLM), `openai` (any server)."""
from __future__ import annotations

from typing import Any

from multiverse.evaluation.backends.base import Backend, Decoding, Generation, Prompt

BACKENDS = ("native", "sglang", "openai")


def make_backend(kind: str, **options: Any) -> Backend:
    if kind in ("native", "sglang"):
        from multiverse.evaluation.backends.native import NativeBackend

        return NativeBackend(backend=kind, **options)
    if kind == "openai":
        from multiverse.evaluation.backends.openai_api import OpenAIBackend

        return OpenAIBackend(**options)
    raise ValueError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Decoding", "Generation", "Prompt", "make_backend"]
