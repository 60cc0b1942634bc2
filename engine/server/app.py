"""The ASGI app: routes, error handlers, the API-key check and the request log, around one EngineClient.

`build_app(state)` wires it; `ServerState` is everything a route may read (never engine internals).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine.server import errors
from engine.server.admission import Admission
from engine.server.config import ServerConfig
from engine.server.constraints import Constraints
from engine.server.engine_client import EngineClient
from engine.server.errors import APIError
from engine.server.frontdoor import FrontDoor, reply
from engine.server.generate_api import router as generate_router
from engine.server.limits import Limits
from engine.server.metrics import Metrics
from engine.server.offload import Offload
from engine.server.openai_api import router as openai_router

log = logging.getLogger("multiverse.serve")
_PROTECTED = ("/v1/", "/generate")
_ROUTES = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/generate", "/model_info", "/get_model_info",
           "/health", "/metrics"}


@dataclass
class ServerState:
    lm: Any  # MultiverseLM: routes use its tokenizer and encode_prompt only
    client: EngineClient
    config: ServerConfig
    metrics: Metrics
    limits: Limits
    offload: Offload  # the worker threads for tokenizing and decoding
    admission: Admission  # requests in flight (the front door holds a ticket per request)
    constraints: Constraints  # /generate's `ebnf` and `logit_bias` (engine/server/constraints.py)
    started: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def build(cls, lm: Any, config: ServerConfig, client: EngineClient, metrics: Metrics) -> "ServerState":
        limits = Limits.derive(config, lm)
        model_config = getattr(getattr(lm, "model", None), "config", None)
        vocab_size = getattr(model_config, "vocab_size", None) or len(lm.tokenizer)  # the logits' width
        constraints = Constraints(lm.tokenizer, vocab_size, lm.scheduler.eos_ids)
        return cls(lm, client, config, metrics, limits, Offload(config.cpu_workers), Admission(limits, metrics), constraints)


def build_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="multiverse serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mv = state
    errors.install(app)
    app.include_router(openai_router)
    app.include_router(generate_router)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.client.healthy:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "error", "error": state.client.error or "the engine is stopped"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def unknown(path: str, request: Request) -> JSONResponse:
        return errors.error_response(404, f"no route {request.method} /{path}")

    app.add_middleware(FrontDoor, admission=state.admission, limits=state.limits, metrics=state.metrics)
    app.add_middleware(Gate, state=state)  # added last: the outer one (the key is checked before the body is read)
    return app


class Gate:
    """Pure ASGI middleware (streams pass through untouched): Bearer check, one log line, status metrics."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state
        key = state.config.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, path = time.perf_counter(), scope["path"]
        status = [500]

        async def tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.expected and path.startswith(_PROTECTED) and _header(scope, b"authorization") != self.expected:
                await reply(tracked, APIError(401, "missing or wrong API key (send Authorization: Bearer <key>)"))
            else:
                await self.app(scope, receive, tracked)
        finally:
            info = scope.get("state", {}).get("log") or {}
            code = info.get("status", status[0])
            self.state.metrics.answered(path if path in _ROUTES else "other", code)
            if path not in ("/health", "/metrics"):
                log.info(
                    "%s %s %s %d prompt_tokens=%d completion_tokens=%d %.3fs", info.get("id", "-"), scope["method"],
                    path, code, info.get("prompt_tokens", 0), info.get("completion_tokens", 0), time.perf_counter() - started,
                )


def _header(scope: dict, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", []) if k == name), None)

