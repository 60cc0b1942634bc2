"""A real HTTP proxy on 127.0.0.1 that forwards everything to a server and fails one chosen `/generate` call.

The chosen call is the first `/generate` from the `after`-th on (0-based) whose batch holds at most
`max_inputs` inputs; from then on every call with the same body (the client's re-sends) fails too, `times`
times in all (None: always). `mode` "500" answers 500; "hang" holds the call `hang_s` seconds (past the
client's timeout) before forwarding it. `stop()` closes the listening socket: later calls are refused.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.server.launch import bind


class FaultProxy:
    def __init__(self, target: str, mode: str = "500", after: int = 0, max_inputs: int | None = None,
                 times: int | None = None, hang_s: float = 5.0) -> None:
        self.target, self.mode, self.after, self.max_inputs, self.times, self.hang_s = target, mode, after, max_inputs, times, hang_s
        self.calls = 0  # /generate calls seen
        self.chosen: bytes | None = None  # the body of the chosen call
        self.failed = 0  # calls failed (the chosen one and its re-sends)
        self.chosen_inputs: list[list[int]] = []
        self.sock = bind("127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> "FaultProxy":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        if request.url.path == "/generate" and self._fails(body):
            self.failed += 1
            if self.mode == "500":
                return Response(json.dumps({"error": {"message": "injected failure"}}), status_code=500)
            await asyncio.sleep(self.hang_s)
        async with httpx.AsyncClient(base_url=self.target, timeout=120) as http:
            answer = await http.request(request.method, request.url.path, content=body,
                                        headers={"content-type": request.headers.get("content-type", "application/json")})
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))

    def _fails(self, body: bytes) -> bool:
        """Count the call; True when it is the chosen one or a re-send of it (and failures are left)."""
        index, self.calls = self.calls, self.calls + 1
        if self.chosen is None:
            inputs = json.loads(body).get("input_ids")
            batch = inputs if inputs and isinstance(inputs[0], list) else [inputs]
            if index < self.after or (self.max_inputs is not None and len(batch) > self.max_inputs):
                return False
            self.chosen, self.chosen_inputs = body, batch
        return body == self.chosen and (self.times is None or self.failed < self.times)


def requests_in(inputs: list[list[int]], prompts: list[list[int]]) -> set[int]:
    """Indices of the prompts whose requests have an input in a call (an input starts with its prompt)."""
    return {i for i, p in enumerate(prompts) for ids in inputs if ids[: len(p)] == p}


__all__ = ["FaultProxy", "requests_in"]
