"""A scripted OpenAI-compatible chat server on 127.0.0.1: the stand-in LLM for tests, the benchmark and demos.

Its replies are computed from the request (the stage is the JSON-schema name; sentence numbers, step ids and
paths are read back from the prompt), so every reply is valid unless a fault is injected. Faults, drawn at
`fault_rate` per request: HTTP 429 and 500, a timeout (the reply comes after `timeout_sleep`), truncated
JSON, broken structure (overlapping spans, unknown ids, a wrong outline count) and lost content (a step or
the paths' sentences dropped). Kinds that are never drawn unless listed in `faults`: a refusal with HTTP 400
("context length"), 401, 403 or 404; "trickle" (a valid reply sent in pieces over `trickle_seconds`); "prose"
(a valid JSON reply wrapped in prose). Replies carry `usage` (whitespace-separated words of the prompt and of
the reply). Every request's arrival time (time.monotonic), body and fault are kept in `arrivals`, `bodies`
and `drawn`.
It is bounded: it stops itself after `max_requests` requests or `max_seconds`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from data_pipeline.config import ChecksConfig

FAULTS = ("429", "500", "timeout", "truncated", "broken", "lost")  # drawn by default
REFUSALS = ("400", "401", "403", "404")  # permanent HTTP errors, only when listed in ServerConfig.faults
_REFUSAL_TEXT = {"400": "This model's maximum context length is 4096 tokens; your messages resulted in 9000",
                 "401": "Incorrect API key provided", "403": "You are not allowed to use this model",
                 "404": "The model does not exist"}
_SENTENCE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_STEP_ID = re.compile(r"^\s*(S\d+(?:\.\d+)?):", re.MULTILINE)
_PATH_HEAD = re.compile(r"^Path (\d+) \(step ", re.MULTILINE)
_OPENER = re.compile(r"^(?:" + "|".join(ChecksConfig().sibling_openers) + r")\b[,:]?\s*")


@dataclass(frozen=True)
class ServerConfig:
    latency: float = 0.0  # seconds added to every request
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    timeout_sleep: float = 3.0  # how late a "timeout" reply comes (set above the client's timeout)
    seed: int = 0
    max_requests: int = 100_000
    max_seconds: float = 600.0
    step_size: int = 0  # sentences per main step; 0: about a twelfth of the trace (at least 2)
    fault_key: str = "random"  # random: drawn per request; content: a hash of the messages decides (the same
    # request always gets the same fault, so runs are reproducible; use it with reply-level faults only)
    retry_after: float = 0.0  # the Retry-After header of injected 429 and 500 replies (seconds)
    trickle_seconds: float = 4.0  # how long a "trickle" reply takes to arrive (in ten pieces)


class ScriptedServer:
    def __init__(self, cfg: ServerConfig = ServerConfig(), port: int = 0) -> None:
        self.cfg = cfg
        self.requests = 0
        self.faults: dict[str, int] = {}
        self.arrivals: list[float] = []  # time.monotonic() of each request, in arrival order
        self.bodies: list[dict[str, Any]] = []
        self.drawn: list[str] = []  # the fault of each request ("" for none), in arrival order
        self._lock = threading.Lock()
        self._rng = random.Random(cfg.seed)
        self._httpd = _QuietServer(("127.0.0.1", port), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(cfg.max_seconds, self.stop)
        self._timer.daemon = True
        self._stopped = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "ScriptedServer":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            self._timer.cancel()
            threading.Thread(target=self._shutdown, daemon=True).start()

    def _shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def wait(self) -> None:
        self._thread.join()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._thread.join(timeout=10)

    def admit(self, body: dict[str, Any]) -> str | None:
        """Count a request and draw its fault ("" for none); None when over the request limit."""
        with self._lock:
            self.requests += 1
            self.arrivals.append(time.monotonic())
            self.bodies.append(body)
            if self.requests > self.cfg.max_requests:
                self.drawn.append("limit")
                self.stop()
                return None
            rng = self._rng
            if self.cfg.fault_key == "content":
                digest = hashlib.sha256(json.dumps([self.cfg.seed, body.get("messages")]).encode()).digest()
                rng = random.Random(digest)
            fault = ""
            if rng.random() < self.cfg.fault_rate:
                fault = rng.choice(self.cfg.faults)
                self.faults[fault] = self.faults.get(fault, 0) + 1
            self.drawn.append(fault)
            return fault


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once (the default backlog of 5 refuses some)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (injected timeouts) are expected here


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            fault = server.admit(body)
            time.sleep(server.cfg.latency)
            if fault is None:
                return self._send(503, {"error": {"message": "scripted server: request limit reached"}})
            if fault in ("429", "500"):
                return self._send(int(fault), {"error": {"message": f"injected {fault}"}},
                                  {"Retry-After": f"{server.cfg.retry_after:g}"})
            if fault in REFUSALS:
                return self._send(int(fault), {"error": {"message": _REFUSAL_TEXT[fault], "type": "invalid_request"}})
            if fault == "timeout":
                time.sleep(server.cfg.timeout_sleep)
            content = reply(body, fault, server.cfg)
            pieces = 10 if fault == "trickle" else 1
            self._send(200, _completion(body, content), pieces=pieces, spread=server.cfg.trickle_seconds)

        def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None,
                  pieces: int = 1, spread: float = 0.0) -> None:
            data = json.dumps(obj).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                size = -(-len(data) // pieces)
                for k in range(0, len(data), size):
                    self.wfile.write(data[k:k + size])
                    self.wfile.flush()
                    if pieces > 1:
                        time.sleep(spread / pieces)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (an injected timeout)

    return Handler


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(content.split())
    return {
        "id": "scripted", "object": "chat.completion", "created": 0, "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


# ---------------------------------------------------------------------------- replies
def reply(body: dict[str, Any], fault: str, cfg: ServerConfig) -> str:
    messages = body.get("messages", [])
    prompt = next((m["content"] for m in messages if m.get("role") == "user"), "")
    stage = body.get("response_format", {}).get("json_schema", {}).get("name") or _guess_stage(prompt)
    obj = {"steps": _steps, "dependencies": _dependencies, "rewrite": _rewrite}[stage](prompt, fault, cfg)
    text = json.dumps(obj, ensure_ascii=False)
    if fault == "prose":
        return f"Sure! Here is the {stage} analysis you asked for:\n\n{text}\n\nLet me know if anything is unclear."
    return text[: len(text) // 2] if fault == "truncated" else text


def _guess_stage(prompt: str) -> str:
    if "numbered sentences" in prompt:
        return "steps"
    return "rewrite" if _PATH_HEAD.search(prompt) else "dependencies"


def _steps(prompt: str, fault: str, cfg: ServerConfig) -> dict[str, Any]:
    sentences = {int(k): text for k, text in _SENTENCE.findall(prompt)}
    n = max(sentences, default=1)
    size = cfg.step_size or max(2, math.ceil(n / 12))
    steps = []
    for first in range(1, n + 1, size):
        last = min(n, first + size - 1)
        step: dict[str, Any] = {"summary": _summary(sentences.get(first, "")), "first": first, "last": last}
        if last - first >= 3:
            mid = (first + last) // 2
            step["substeps"] = [{"summary": _summary(sentences.get(first, "")), "first": first, "last": mid},
                                {"summary": _summary(sentences.get(mid + 1, "")), "first": mid + 1, "last": last}]
        steps.append(step)
    if fault == "broken" and len(steps) > 1:
        steps[1]["first"] = steps[0]["first"]
    if fault == "lost" and len(steps) > 1:
        steps.pop()
    return {"steps": steps}


def _summary(sentence: str) -> str:
    words = sentence.split()[:8]
    return "Establish: " + (" ".join(words) if words else "the next part")


def _dependencies(prompt: str, fault: str, cfg: ServerConfig) -> dict[str, Any]:
    """Main steps in runs of three independent ones; substep 2 independent of substep 1."""
    deps = []
    for sid in _STEP_ID.findall(prompt):
        k = int(sid[1:].split(".")[0])
        if "." not in sid and k > 1 and k % 3 == 1:
            deps.append({"step": sid, "needs": [f"S{k - 1}"]})
    if fault == "broken":
        deps.append({"step": "S1", "needs": ["S999"]})
    if fault == "lost":
        deps = []
    return {"dependencies": deps}


def _rewrite(prompt: str, fault: str, cfg: ServerConfig) -> dict[str, Any]:
    heads = list(_PATH_HEAD.finditer(prompt))
    rewrites, outlines = [], []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(prompt)
        section = prompt[head.start():end]
        outlines.append(section.split(": ", 1)[-1].split(")\n", 1)[0][:80])
        lines = _SENTENCE.findall(section)
        for j, (k, text) in enumerate(lines):
            new = _fix(text, first=j == 0)
            if fault == "lost":
                new = "..."
            if new != text:
                rewrites.append({"sentence": int(k), "text": new})
    if fault == "broken":
        outlines.append("an outline for a path that does not exist")
    return {"goal": f"Work out {len(heads)} independent steps.", "outlines": outlines,
            "conclusion": f"The {len(heads)} paths are complete.", "rewrites": rewrites}


def _fix(text: str, first: bool) -> str:
    """Drop a sibling-linking opener from a path's first sentence and unname other paths."""
    if first and (m := _OPENER.match(text)) is not None:
        rest = text[m.end():]
        text = (rest[:1].upper() + rest[1:]) if rest else text
    return re.sub(r"\bPath (\d)", r"route \1", text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cfg = ServerConfig(latency=a.latency, fault_rate=a.fault_rate, max_requests=a.max_requests,
                       max_seconds=a.max_seconds, seed=a.seed)
    server = ScriptedServer(cfg, a.port).start()
    print(server.base_url, flush=True)
    server.wait()


if __name__ == "__main__":
    main()
