"""`multiverse serve`: an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, streaming) on
the native engine.

One worker thread owns the engine and runs its steps; HTTP handler threads hand it requests and read events
back from a queue per request. Streaming sends the stable prefix of the final merged text: root text as it is
written, then path 1 as it is written, path 2 once path 1 has closed, and so on; the last chunk carries the
branch tree and the SPEC §7 stats under "multiverse".

    multiverse serve --model PATH [--host 127.0.0.1] [--port 8000]
"""
from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine.api import MultiverseLM
from engine.branch import Branch, Status
from engine.params import SamplingParams
from engine.request import Phase, Request
from engine.result import RequestOutput

FINISH = {"stop": "stop", "length": "length", "critical_length": "length"}


class BadRequest(ValueError):
    """A client error; the message names the field."""


# ---------------------------------------------------------------------- engine worker
class EngineWorker(threading.Thread):
    def __init__(self, lm: MultiverseLM) -> None:
        super().__init__(daemon=True, name="multiverse-engine")
        self.lm = lm
        self.inbox: queue.Queue = queue.Queue()
        self.active: dict[int, tuple[Request, queue.Queue]] = {}
        self.sent: dict[int, int] = {}  # request id -> stable token count last sent as text
        self.stopping = threading.Event()

    def submit(self, prompt: Any, params: SamplingParams) -> queue.Queue:
        """Events for the caller: ("text", full stable text so far) ... then ("done", RequestOutput)."""
        out: queue.Queue = queue.Queue()
        self.inbox.put((prompt, params, out))
        return out

    def run(self) -> None:
        while not self.stopping.is_set():
            self._take(block=not self.active)
            if not self.active:
                continue
            try:
                self.lm.scheduler.step()
            except Exception as err:  # noqa: BLE001 - never leave a client waiting on a dead worker
                for rid, (request, out) in list(self.active.items()):
                    self.lm.scheduler.abort(rid)
                    out.put(("error", f"engine error: {type(err).__name__}: {err}"))
                self.active.clear()
                self.sent.clear()
                continue
            for rid, (request, out) in list(self.active.items()):
                if request.phase is Phase.FINISHED:
                    out.put(("done", request.output))
                    del self.active[rid]
                    self.sent.pop(rid, None)
                elif request.root is not None:
                    ids = stable_ids(request.root)[len(request.prompt_ids) :]
                    if len(ids) != self.sent.get(rid):  # decode only when the stable prefix moved
                        self.sent[rid] = len(ids)
                        out.put(("text", self.lm.tokenizer.decode(ids)))

    def _take(self, block: bool) -> None:
        while True:
            try:
                prompt, params, out = self.inbox.get(timeout=0.1) if block else self.inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            try:
                (request,) = self.lm._submit([prompt], params)
            except (TypeError, ValueError) as err:
                out.put(("error", str(err)))
                continue
            self.active[request.request_id] = (request, out)


def stable_ids(branch: Branch) -> list[int]:
    """The prefix of the final merged order that can no longer change: stops inside the first open path."""
    ids: list[int] = []
    start = 0
    for at, children in branch.forks:
        ids += branch.tokens[start:at]
        for child in children:
            ids += stable_ids(child)
            if child.status not in (Status.CLOSING, Status.DONE):
                return ids
        start = at
    return ids + branch.tokens[start:]


# ---------------------------------------------------------------------- HTTP
def sampling_from(body: dict[str, Any]) -> SamplingParams:
    if body.get("n", 1) != 1:
        raise BadRequest("n: only n=1 is supported")
    stop = body.get("stop") or ()
    try:
        return SamplingParams(
            max_new_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
            max_critical_tokens=body.get("max_critical_tokens"),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            top_k=int(body.get("top_k", 0)),
            seed=body.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            logprobs=bool(body.get("logprobs")),
            max_paths=body.get("max_paths"),
            max_depth=body.get("max_depth"),
        )
    except (TypeError, ValueError) as err:
        raise BadRequest(str(err)) from err


def make_handler(worker: EngineWorker, model_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet; the engine's own output is the log
            return

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "multiverse"}]})
            elif self.path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._json(404, _error(f"no route GET {self.path}"))

        def do_POST(self) -> None:
            chat = self.path == "/v1/chat/completions"
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                return self._json(404, _error(f"no route POST {self.path}"))
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the request body must be a JSON object")
                prompt = body.get("messages") if chat else body.get("prompt")
                if not prompt:
                    raise BadRequest("messages: required" if chat else "prompt: required")
                params = sampling_from(body)
            except (json.JSONDecodeError, BadRequest) as err:
                return self._json(400, _error(str(err)))
            events = worker.submit(prompt, params)
            if body.get("stream"):
                self._stream(events, chat)
            else:
                self._complete(events, chat)

        def _complete(self, events: queue.Queue, chat: bool) -> None:
            while True:
                kind, payload = events.get()
                if kind == "error":
                    return self._json(400, _error(payload))
                if kind == "done":
                    return self._json(200, _response(payload, chat, model_name))

        def _stream(self, events: queue.Queue, chat: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            sent = ""
            if chat:
                self._event(_chunk(chat, model_name, {"role": "assistant", "content": ""}, None))
            while True:
                kind, payload = events.get()
                if kind == "error":
                    self._event(_error(payload))
                    break
                text = payload if kind == "text" else payload.text
                if text.startswith(sent) and len(text) > len(sent):
                    self._event(_chunk(chat, model_name, text[len(sent) :], None))
                    sent = text
                if kind == "done":
                    last = _chunk(chat, model_name, "", FINISH.get(payload.finish_reason, payload.finish_reason))
                    last["multiverse"] = _extras(payload)
                    self._event(last)
                    break
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

        def _event(self, obj: dict[str, Any]) -> None:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        def _json(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _extras(out: RequestOutput) -> dict[str, Any]:
    return {"tree": [asdict(b) for b in out.tree], "stats": asdict(out.stats), "finish_reason": out.finish_reason}


def _response(out: RequestOutput, chat: bool, model: str) -> dict[str, Any]:
    reason = FINISH.get(out.finish_reason, out.finish_reason)
    logprobs = {"tokens": out.token_ids, "token_logprobs": out.logprobs} if out.logprobs is not None else None
    choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": logprobs}
    choice.update({"message": {"role": "assistant", "content": out.text}} if chat else {"text": out.text})
    n_prompt, n_out = len(out.prompt_token_ids), len(out.token_ids)
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{out.request_id}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        "multiverse": _extras(out),
    }


def _chunk(chat: bool, model: str, delta: Any, reason: str | None) -> dict[str, Any]:
    if chat:
        content = delta if isinstance(delta, dict) else ({"content": delta} if delta else {})
        choice = {"index": 0, "delta": content, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": delta, "finish_reason": reason}
    obj = "chat.completion.chunk" if chat else "text_completion"
    return {"id": "multiverse", "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}


# ---------------------------------------------------------------------- entry points
def start(lm: MultiverseLM, host: str = "127.0.0.1", port: int = 8000, model_name: str = "multiverse") -> tuple[ThreadingHTTPServer, EngineWorker]:
    """Start the worker and an HTTP server thread; returns both (server.server_address has the real port)."""
    worker = EngineWorker(lm)
    worker.start()
    server = ThreadingHTTPServer((host, port), make_handler(worker, model_name))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="multiverse-http").start()
    return server, worker


def stop(server: ThreadingHTTPServer, worker: EngineWorker) -> None:
    server.shutdown()
    server.server_close()
    worker.stopping.set()
    worker.join(timeout=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local path of a Hugging Face causal LM whose tokenizer has the structure tags")
    src.add_argument("--tiny", action="store_true", help="a tiny random model built in-process (demo, tests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default="multiverse")
    parser.add_argument("--device", default=None)
    parser.add_argument("--sequential", action="store_true", help="parallel=False")
    parser.add_argument("--max-paths", type=int, default=None)
    parser.add_argument("--max-depth", type=int, default=None)
    parser.add_argument("--num-pages", type=int, default=2048)
    parser.add_argument("--page-size", type=int, default=16)


def run(args: argparse.Namespace) -> int:
    options = dict(
        parallel=not args.sequential, max_paths=args.max_paths, max_depth=args.max_depth,
        num_pages=args.num_pages, page_size=args.page_size,
    )
    if args.tiny:
        from multiverse.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        lm = MultiverseLM(build_model(tok), tok, device=args.device, **options)
    else:
        lm = MultiverseLM(args.model, device=args.device, **options)
    server, worker = start(lm, args.host, args.port, args.served_model_name)
    print(f"multiverse serve: http://{server.server_address[0]}:{server.server_address[1]}/v1 ({args.served_model_name})")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stop(server, worker)
    return 0
