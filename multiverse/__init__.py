"""Multiverse: language models that reason in parallel (Map, Process, Reduce in one decoding)."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The engine imports torch and transformers; keep `import multiverse` light for the curator and CLI.
    if name in ("MultiverseLM", "SamplingParams"):
        import engine.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'multiverse' has no attribute {name!r}")
