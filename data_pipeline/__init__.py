"""The curator: sequential reasoning traces -> Multiverse data through an OpenAI-compatible LLM.

Exports (imported on first use, so that `multiverse curate` starts without loading torch):
`curate`, `structure_stats`, `load_config`, `CurateConfig`, `ConfigError`.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "curate": "data_pipeline.api",
    "structure_stats": "data_pipeline.api",
    "load_config": "data_pipeline.config",
    "CurateConfig": "data_pipeline.config",
    "ConfigError": "data_pipeline.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data_pipeline' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
