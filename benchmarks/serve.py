"""`multiverse serve` under a hostile load on loopback: can any client hang, starve or leak it?

Starts `multiverse serve` (the shipped tiny model unless --model) as a subprocess, then at once:
  - 64 streaming chat clients, each asking 3 questions of the default model's task in a row (192 good requests);
  - 16 clients that start a long stream (ignore_eos, 4000 tokens) and hang up after a few chunks;
  - one client sending a stream of malformed requests (bad JSON, bad UTF-8, bad Content-Length, wrong types,
    out-of-range values, unknown model, a prompt longer than the context) for as long as the good ones run.
Then it reads /metrics for the KV pool once the engine is idle and stops the server with SIGTERM.
Reports connection resets, 5xx answers, good requests that did not end normally (a neighbour's bad input or
disconnect harmed them), malformed requests that got no 4xx, KV pages in use after the run (0 = idle), and
p50/p99 of latency and time to first token. Prints progress to stderr and ONE JSON line to stdout.

    python benchmarks/serve.py [--model PATH] [--clients 64] [--rounds 3] [--leavers 16] [--timeout 600]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from multiverse.demo.remainders import sample_problem  # noqa: E402

RESET_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def malformed(context: int) -> list[tuple[str, bytes, str]]:
    """(name, raw HTTP body or request, extra headers) for /v1/chat/completions and /v1/completions."""
    chat = '{"messages": [{"role": "user", "content": "hi"}], %s}'
    return [
        ("bad_json", b'{"messages": [', ""),
        ("bad_utf8", b'{"prompt": "\xff\xfe\xfd"}', ""),
        ("content_length_abc", b'{"prompt": "x"}', "Content-Length: abc\r\n"),
        ("seed_abc", (chat % '"seed": "abc"').encode(), ""),
        ("seed_float", (chat % '"seed": 1.5').encode(), ""),
        ("top_k_huge", (chat % f'"top_k": {2**63}').encode(), ""),
        ("max_tokens_0", (chat % '"max_tokens": 0').encode(), ""),
        ("max_tokens_1e400", (chat % '"max_tokens": 1e400').encode(), ""),
        ("messages_5", b'{"messages": 5}', ""),
        ("role_order", b'{"messages": [{"role": "wizard", "content": "x"}]}', ""),
        ("unknown_model", (chat % '"model": "gpt-17"').encode(), ""),
        ("too_long", json.dumps({"prompt": [7] * (context + 5)}).encode(), ""),
        ("not_an_object", b"[1, 2, 3]", ""),
    ]


async def raw_post(port: int, path: str, body: bytes, extra: str) -> int:
    """One request on its own connection; the status code (0: no answer at all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = "" if "Content-Length" in extra else f"Content-Length: {len(body)}\r\n"
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}{extra}Connection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        return int(line.split()[1]) if line.startswith(b"HTTP/1.1") else 0
    finally:
        writer.close()


class Tally:
    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.resets = self.server_errors = self.affected = self.good_done = 0
        self.malformed_sent = self.malformed_not_4xx = self.leavers_done = 0


async def good_client(http: httpx.AsyncClient, rng: random.Random, rounds: int, tally: Tally) -> None:
    for _ in range(rounds):
        question = sample_problem(rng).question
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": 700, "temperature": 0.6,
                "seed": rng.randrange(2**31), "stream": True, "stream_options": {"include_usage": True}}
        began, first, finish, done = time.perf_counter(), None, None, False
        try:
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code >= 500:
                    tally.server_errors += 1
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: {"):
                        event = json.loads(line[6:])
                        if "error" in event:
                            tally.server_errors += 1
                            continue
                        for choice in event["choices"]:
                            if first is None and choice["delta"].get("content"):
                                first = time.perf_counter()
                            finish = choice.get("finish_reason") or finish
        except RESET_ERRORS:
            tally.resets += 1
            continue
        if done and finish in ("stop", "length"):
            tally.good_done += 1
            tally.latency.append(time.perf_counter() - began)
            tally.ttft.append((first or time.perf_counter()) - began)
        else:
            tally.affected += 1


async def leaver(http: httpx.AsyncClient, tally: Tally, chunks: int = 5) -> None:
    body = {"prompt": "Add each pair: 1+2, 3+4.", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    try:
        async with http.stream("POST", "/v1/completions", json=body) as r:
            seen = 0
            async for _ in r.aiter_lines():
                seen += 1
                if seen >= chunks:
                    break  # hang up mid-stream
        tally.leavers_done += 1
    except RESET_ERRORS:
        tally.resets += 1


async def vandal(port: int, context: int, stop: asyncio.Event, tally: Tally) -> None:
    cases = malformed(context)
    i = 0
    while not stop.is_set():
        _, body, extra = cases[i % len(cases)]
        path = "/v1/completions" if b'"prompt"' in body or b"[1, 2" in body else "/v1/chat/completions"
        try:
            status = await raw_post(port, path, body, extra)
        except (ConnectionError, asyncio.TimeoutError, OSError):
            tally.resets += 1
            status = 0
        tally.malformed_sent += 1
        tally.server_errors += status >= 500
        tally.malformed_not_4xx += not 400 <= status < 500
        i += 1
        await asyncio.sleep(0.02)


async def load(port: int, args: argparse.Namespace, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=args.clients + args.leavers + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.timeout, limits=limits) as http:
        stop = asyncio.Event()
        rng = random.Random(0)
        vandals = asyncio.create_task(vandal(port, args.max_model_len, stop, tally))
        good = [good_client(http, random.Random(rng.random()), args.rounds, tally) for _ in range(args.clients)]
        leavers = [leaver(http, tally) for _ in range(args.leavers)]
        await asyncio.gather(*good, *leavers)
        stop.set()
        await vandals


def metric(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model path (default: the shipped tiny model)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--leavers", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600, help="bound on the whole load (s)")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "multiverse.cli", "serve", "--port", str(port), "--threads", str(args.threads),
           "--max-model-len", str(args.max_model_len), "--served-model-name", "tiny"] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    log = open(ROOT / "benchmarks" / ".serve.log", "w")  # the server's request log, for a look afterwards
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not come up; see benchmarks/.serve.log")
        print(f"server up on :{port}; load: {args.clients} x {args.rounds} streams, {args.leavers} leavers, malformed", file=sys.stderr)
        tally, began = Tally(), time.perf_counter()
        asyncio.run(asyncio.wait_for(load(port, args, tally), args.timeout))
        wall = time.perf_counter() - began
        idle_deadline = time.monotonic() + 30
        while True:  # the engine drains what the leavers left (it should be nothing)
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            busy = metric(text, "multiverse_requests_running") + metric(text, "multiverse_requests_waiting")
            if not busy or time.monotonic() > idle_deadline:
                break
            time.sleep(0.2)
        result = {
            "good_requests": args.clients * args.rounds, "good_completed": tally.good_done, "leavers": args.leavers,
            "malformed_sent": tally.malformed_sent, "resets": tally.resets, "server_errors_5xx": tally.server_errors,
            "affected_by_neighbours": tally.affected, "malformed_without_4xx": tally.malformed_not_4xx,
            "kv_pages_in_use_after": int(metric(text, "multiverse_kv_pages_used")),
            "aborts": int(metric(text, "multiverse_aborts_total")),
            "latency_s": {"p50": pct(tally.latency, 0.5), "p99": pct(tally.latency, 0.99)},
            "ttft_s": {"p50": pct(tally.ttft, 0.5), "p99": pct(tally.ttft, 0.99)},
            "generated_tokens": int(metric(text, "multiverse_generation_tokens_total")),
            "forks": int(metric(text, "multiverse_forks_total")), "wall_s": round(wall, 1),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
    result["server_exit"] = code
    print(json.dumps(result))


if __name__ == "__main__":
    main()
