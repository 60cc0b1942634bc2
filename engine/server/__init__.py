"""`multiverse serve`: an OpenAI-compatible and SGLang-`/generate`-compatible HTTP server on the native engine.

FastAPI on uvicorn. Reading order: config -> protocol / generate_protocol (pydantic request models) -> errors
-> engine_client (the thread that owns the engine) -> stable, detok, streaming (what text a client sees) ->
limits / admission / frontdoor / offload (caps, 503s, worker threads) -> openai_api / openai_format /
generate_api (routes) -> metrics -> app (wiring, API key, request log) -> launch
(uvicorn, sockets, graceful shutdown) -> cli (flags).

    multiverse serve [--model PATH] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-model-len N]
"""
from engine.server.cli import add_arguments, check_args, run

__all__ = ["add_arguments", "check_args", "run"]
