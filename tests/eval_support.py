"""A scripted OpenAI-compatible server on 127.0.0.1 for the evaluation tests: it answers /v1/models (with an
optional max_model_len and owner) and chat/completions with `reply(body) -> (text, delay_s)`, and records every
request body, how many were in flight at once, and the order requests finished in. Bounded by `max_seconds`."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], tuple[str, float]]


class EvalServer:
    def __init__(self, reply: Reply, max_model_len: int | None = None, owned_by: str = "scripted",
                 max_seconds: float = 120.0) -> None:
        self.reply, self.max_model_len, self.owned_by = reply, max_model_len, owned_by
        self.bodies: list[dict[str, Any]] = []
        self.finished: list[str] = []  # the user message of each request, in the order its reply was sent
        self.in_flight = self.max_in_flight = 0
        self.in_flight_when_finished: list[int] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.timer = threading.Timer(max_seconds, self.httpd.shutdown)
        self.timer.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "EvalServer":
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def user_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return next(m["content"] for m in body["messages"] if m["role"] == "user")
    return body.get("prompt", "")


def _handler(server: EvalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/").endswith("/models"):
                card: dict[str, Any] = {"id": "scripted", "object": "model", "created": 0, "owned_by": server.owned_by}
                if server.max_model_len is not None:
                    card["max_model_len"] = server.max_model_len
                return self._send(200, {"object": "list", "data": [card]})
            self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with server.lock:
                server.bodies.append(body)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            text, delay = server.reply(body)
            time.sleep(delay)
            with server.lock:
                server.in_flight_when_finished.append(server.in_flight)
                server.in_flight -= 1
                server.finished.append(user_text(body))
            chat = "messages" in body
            choice = {"index": 0, "finish_reason": "stop",
                      **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
            self._send(200, {"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 0,
                             "model": "scripted", "choices": [choice]})

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
