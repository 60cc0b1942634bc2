"""The front door of the generation routes (pure ASGI middleware, inside the API-key gate): the body cap and
the request cap are enforced before any route parses or tokenizes anything.

1. `Content-Length` above the cap: 413 at once, the body unread (uvicorn discards what the client still sends).
2. The body is read here (a chunked one is counted as it arrives: 413 once it passes the cap) and replayed to
   the route, whose later `receive()` calls still see `http.disconnect`.
3. A ticket (admission.py) is held until the response has gone out; a full server answers 503 + Retry-After.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from engine.server.admission import Admission
from engine.server.errors import APIError, error_body
from engine.server.limits import Limits

GENERATION_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", "/generate"})
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class FrontDoor:
    def __init__(self, app: Any, admission: Admission, limits: Limits, metrics: Any) -> None:
        self.app, self.admission, self.limits, self.metrics = app, admission, limits, metrics

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in GENERATION_ROUTES or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limits.body_bytes:
            return await self._too_large(send, f"{declared} bytes")
        body = await _read_body(receive, self.limits.body_bytes)
        if body is None:  # the client left before its body was complete: nobody to answer
            scope.setdefault("state", {})["log"] = {"status": 499}
            return None
        if isinstance(body, _TooLarge):
            return await self._too_large(send, f"more than {self.limits.body_bytes} bytes")
        try:
            ticket = self.admission.enter(1)
        except APIError as err:
            return await reply(send, err)
        scope.setdefault("state", {})["ticket"] = ticket  # a /generate batch grows it to one slot per input
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            ticket.release()

    async def _too_large(self, send: Send, size: str) -> None:
        self.metrics.rejected("body_too_large")
        await reply(send, APIError(413, f"the request body has {size}; this server accepts at most "
                                   f"{self.limits.body_bytes} bytes (--max-body-bytes)", None, "body_too_large"))


class _TooLarge:
    pass


async def _read_body(receive: Receive, cap: int) -> bytes | _TooLarge | None:
    """The whole body, _TooLarge as soon as it passes `cap` bytes, None if the client disconnected."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return _TooLarge()
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the route the body once, then waits on the real one (for http.disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()

    return replayed


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 answers a malformed length itself
    return None


async def reply(send: Send, err: APIError) -> None:
    body = json.dumps(error_body(err.status, err.message, err.param, err.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
