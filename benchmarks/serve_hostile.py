"""The hostile load of benchmarks/serve.py: can any client hang, starve or leak the server?

At once: `clients` streaming chat clients, each asking `rounds` questions of the default model's task in a row;
`leavers` clients that start a long stream (ignore_eos, 4000 tokens) and hang up after a few chunks; one client
sending malformed requests (bad JSON, bad UTF-8, bad Content-Length, wrong types, out-of-range values, unknown
model, a prompt longer than the context) for as long as the good ones run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import httpx

from benchmarks.serve_stats import StreamTimes, gap_summary, pct
from multiverse.demo.remainders import sample_problem

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
        self.streams: list[StreamTimes] = []  # the good streams' chunk arrival times
        self.resets = self.server_errors = self.affected = self.good_done = 0
        self.malformed_sent = self.malformed_not_4xx = self.leavers_done = 0


async def good_client(http: httpx.AsyncClient, rng: random.Random, rounds: int, tally: Tally) -> None:
    for _ in range(rounds):
        question = sample_problem(rng).question
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": 700, "temperature": 0.6,
                "seed": rng.randrange(2**31), "stream": True, "stream_options": {"include_usage": True}}
        times = StreamTimes()
        tally.streams.append(times)
        finish, done = None, False
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
                        if any(c["delta"].get("content") for c in event["choices"]):
                            times.chunk()
                        for choice in event["choices"]:
                            finish = choice.get("finish_reason") or finish
        except RESET_ERRORS:
            tally.resets += 1
            continue
        if done and finish in ("stop", "length"):
            tally.good_done += 1
            tally.latency.append(time.perf_counter() - times.began)
            tally.ttft.append(times.ttft if times.ttft is not None else time.perf_counter() - times.began)
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


async def run_hostile(port: int, args: argparse.Namespace, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=args.clients + args.leavers + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.timeout, limits=limits) as http:
        stop = asyncio.Event()
        rng = random.Random(0)
        vandals = asyncio.create_task(vandal(port, args.max_model_len, stop, tally))
        good = [good_client(http, random.Random(rng.random()), args.rounds, tally) for _ in range(args.clients)]
        leavers = [leaver(http, tally) for _ in range(args.leavers)]
        try:
            await asyncio.gather(*good, *leavers)
        finally:
            stop.set()
            await vandals


def hostile_summary(args: argparse.Namespace, tally: Tally) -> dict:
    """What the hostile load measured so far (also after a timeout)."""
    return {
        "good_requests": args.clients * args.rounds, "good_completed": tally.good_done, "leavers": args.leavers,
        "leavers_done": tally.leavers_done, "malformed_sent": tally.malformed_sent, "resets": tally.resets,
        "server_errors_5xx": tally.server_errors, "affected_by_neighbours": tally.affected,
        "malformed_without_4xx": tally.malformed_not_4xx,
        "latency_s": {"p50": pct(tally.latency, 0.5), "p99": pct(tally.latency, 0.99)},
        "ttft_s": {"p50": pct(tally.ttft, 0.5), "p99": pct(tally.ttft, 0.99)},
        "chunk_gaps": gap_summary(tally.streams),
    }
