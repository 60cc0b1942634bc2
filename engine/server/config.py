"""The server's frozen settings, built once by the CLI (or a test) and passed to `build_app`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "multiverse"  # the only name /v1/models lists and requests may ask for
    model_path: str | None = None  # what /model_info names (None: a model built in-process)
    max_model_len: int = 4096  # prompt tokens + generated positions (the model's RoPE range unless lowered)
    default_max_tokens: int = 256  # max_tokens when a request gives none
    api_key: str | None = None  # when set, /v1/* and /generate need "Authorization: Bearer <key>"
    shutdown_timeout_s: float = 10.0  # running requests may finish this long after a stop signal; then aborted
    max_waiting: int = 256  # requests held beyond the engine's max_running (preparing or queued); more get 503
    max_body_bytes: int | None = None  # request body cap (413); None: 64 bytes per context position, >= 1 MiB
    max_prompt_chars: int | None = None  # longer prompt text is refused untokenized; None: derived (limits.py)
    cpu_workers: int = 4  # threads that tokenize and detokenize off the event loop

    def __post_init__(self) -> None:
        for name, low in (("max_model_len", 2), ("default_max_tokens", 1), ("max_waiting", 0), ("cpu_workers", 1),
                          ("max_body_bytes", 1), ("max_prompt_chars", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"ServerConfig.{name} must be >= {low}, got {value}")
