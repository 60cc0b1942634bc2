"""The server's frozen settings, built once by the CLI (or a test) and passed to `build_app`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "multiverse"  # the only name /v1/models lists and requests may ask for
    max_model_len: int = 4096  # prompt tokens + generated positions (the model's RoPE range unless lowered)
    default_max_tokens: int = 256  # max_tokens when a request gives none
    api_key: str | None = None  # when set, /v1/* and /generate need "Authorization: Bearer <key>"
    shutdown_timeout_s: float = 10.0  # running requests may finish this long after a stop signal; then aborted

    def __post_init__(self) -> None:
        if self.max_model_len < 2:
            raise ValueError(f"ServerConfig.max_model_len must be >= 2, got {self.max_model_len}")
        if self.default_max_tokens < 1:
            raise ValueError(f"ServerConfig.default_max_tokens must be >= 1, got {self.default_max_tokens}")
