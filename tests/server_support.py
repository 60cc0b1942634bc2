"""Helpers for the server tests: a real uvicorn server on 127.0.0.1 around a real MultiverseLM, raw HTTP."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from typing import Any

import httpx

from engine.server.config import ServerConfig
from engine.server.launch import Server, bind

KEY = "sk-test"
HEADERS = {"Authorization": f"Bearer {KEY}"}
# a problem of the default model's task: it forks one path per name and answers 3+3+0+1 (greedy)
QUESTION = [{"role": "user", "content": "Let A = 83 mod 5, B = 58 mod 5, C = 50 mod 5, D = 56 mod 5. Compute A+B+C+D."}]
ANSWER = "7"
# Requests and start-up on a loaded 2-core machine can take minutes: waits are bounded by the tests' own timeout
# (pytest-timeout, pyproject), not by a guess of how fast the machine is.
HTTP_TIMEOUT_S = 300.0
READY_LIMIT_S = 540.0


def start(lm: Any, **config: Any) -> Server:
    return Server(lm, ServerConfig(**config), bind("127.0.0.1", 0)).start()


def raw_request(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection; everything the server answers before it closes (bounded)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        chunks, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"content-length" in b"".join(chunks).lower():
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")).split(b":")[1])
                if len(body) >= length:
                    break
    return b"".join(chunks)


def post_raw(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
    if "Content-Length" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode() + body


def sse_events(lines: Any) -> list[Any]:
    """Parsed `data:` payloads of an SSE stream ("[DONE]" kept as the string)."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def wait_ready(proc: subprocess.Popen, url: str, limit: float = READY_LIMIT_S) -> None:
    """Wait until the server process answers GET /health with 200. Readiness, not a start-up deadline: a loaded
    machine only makes start-up slower, so this waits while the process lives (fails at once if it exits) and
    gives up only at `limit`, the test's own timeout."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server at {url} never became ready (exit status {proc.poll()})")


def wait_until(predicate: Any, timeout: float = HTTP_TIMEOUT_S) -> bool:
    """Poll until `predicate()` holds; the bound is generous (a loaded machine is slow, not wrong), so a test waits
    only as long as the state takes to arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
