"""The front door of `multiverse serve` on real uvicorn servers (127.0.0.1): oversized bodies and prompts are
refused before any tokenizing, tokenizing runs off the event loop, a client that leaves while its prompt is
prepared is never submitted, and past --max-waiting clients get 503 + Retry-After while admitted requests
complete exactly as they would alone. The tests check what happens (which refusal, /health answering meanwhile);
benchmarks/frontdoor.py measures how fast."""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import httpx
import pytest

from engine.api import MultiverseLM
from multiverse.demo import DEFAULT_MODEL
from tests.server_support import HEADERS, KEY, start, wait_until



@pytest.fixture(scope="module")
def served(one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    server = start(lm, max_model_len=4096, api_key=KEY)
    yield server
    server.stop()
    assert lm.pool.num_used == 0


class HealthProbe:
    """Polls /health from its own thread while the test body runs; keeps every latency."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies, self.answered_at, self.stop = url, [], [], threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                began = time.perf_counter()
                assert http.get(self.url + "/health").status_code == 200
                self.latencies.append(time.perf_counter() - began)
                self.answered_at.append(time.perf_counter())
                time.sleep(0.02)

    def __enter__(self) -> "HealthProbe":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def timed_post(url: str, path: str, **kwargs) -> tuple[httpx.Response, float]:
    began = time.perf_counter()
    r = httpx.post(url + path, headers={**HEADERS, "Content-Type": "application/json"}, timeout=60, **kwargs)
    return r, time.perf_counter() - began


def test_oversized_bodies_and_prompts_are_refused_at_once_while_health_answers(served):
    limits = served.state.limits
    assert limits.body_bytes == 1 << 20 and limits.prompt_chars == 4096 * 13  # 13: the longest token's characters
    huge = json.dumps({"prompt": "1+1 " * 1_000_000}).encode()  # 4 MB
    too_many_chars = "x" * (limits.prompt_chars + 1)  # under the body cap, over the character cap
    with HealthProbe(served.url) as probe:
        time.sleep(0.1)
        r, took = timed_post(served.url, "/v1/completions", content=huge)
        assert r.status_code == 413
        assert f"{len(huge)} bytes" in r.json()["error"]["message"] and "1048576" in r.json()["error"]["message"]

        chunked, took = timed_post(served.url, "/generate", content=(huge[i : i + 65536] for i in range(0, len(huge), 65536)))
        assert chunked.status_code == 413 and "more than 1048576 bytes" in chunked.json()["error"]["message"]

        for path, body in [("/v1/completions", {"prompt": too_many_chars}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": too_many_chars}]}),
                           ("/generate", {"text": too_many_chars})]:
            r, took = timed_post(served.url, path, json=body)
            error = r.json()["error"]
            assert r.status_code == 400 and error["code"] == "context_length_exceeded", (path, error)
            assert f"longer than {limits.prompt_chars} characters" in error["message"] and "4096 tokens" in error["message"]
        time.sleep(0.1)
    assert len(probe.latencies) >= 3, probe.latencies  # /health answered while the refusals went on
    assert metric(served.url, 'multiverse_rejected_requests_total{reason="body_too_large"}') == 2
    ok = httpx.post(served.url + "/v1/completions", headers=HEADERS, json={"prompt": "Add", "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200  # the ticket goes back just after the last byte is sent: wait for it, bounded
    assert wait_until(lambda: served.state.admission.held == 0, timeout=10)


def test_tokenizing_runs_off_the_loop_and_a_client_that_leaves_is_never_submitted(tok, one_thread):
    # a character cap far above the context: a 400 kB prompt really is tokenized (seconds), then refused by length
    lm = MultiverseLM(str(DEFAULT_MODEL))
    server = start(lm, api_key=KEY, max_prompt_chars=10_000_000, max_body_bytes=8 << 20, cpu_workers=1)
    big = {"prompt": "1+1 " * 100_000}
    try:
        with HealthProbe(server.url) as probe:
            time.sleep(0.1)
            began = time.perf_counter()
            r, took = timed_post(server.url, "/v1/completions", json=big)
        assert r.status_code == 400 and "prompt has" in r.json()["error"]["message"]
        # a loop busy tokenizing answers no probe until it is done; this one answered them throughout
        during = [t for t in probe.answered_at if began < t < began + took]
        assert len(during) >= 3, (probe.latencies, took)

        # the one worker is held until the client below has left: its prompt waits queued, whatever the machine's speed
        hold = threading.Event()
        server.state.offload.pool.submit(hold.wait, 60)

        async def leave_while_queued():
            async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=60) as http:
                with pytest.raises(httpx.TimeoutException):  # queued behind the held worker; its client leaves
                    await http.post("/v1/completions", json={"prompt": "Add", "max_tokens": 5}, timeout=0.3)

        finished = metric(server.url, "multiverse_prompt_tokens_total")  # grows when any request finishes
        gone = 'multiverse_http_requests_total{route="/v1/completions",status="499"}'
        try:
            asyncio.run(leave_while_queued())
            # the worker stays held until the server has seen the client leave: released earlier, the queued
            # prompt could finish tokenizing before a slow machine reports the disconnect
            assert wait_until(lambda: metric(server.url, gone) == 1 and server.state.admission.held == 0)
        finally:
            hold.set()
        time.sleep(0.5)  # had it been submitted, 5 tokens would have finished by now
        assert not lm.has_work() and metric(server.url, "multiverse_prompt_tokens_total") == finished
        assert metric(server.url, "multiverse_aborts_total") == 0  # never reached the engine, so nothing to abort
    finally:
        server.stop()


def test_past_max_waiting_clients_get_503_and_admitted_requests_are_unchanged(tok, one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), max_running=1, check_integrity=True)
    server = start(lm, api_key=KEY, max_waiting=1)  # holds 2: one decoding, one waiting
    long = {"prompt": "Add each pair: 3+4.", "max_tokens": 300, "ignore_eos": True, "temperature": 0, "max_paths": 1}
    short = {"prompt": "Add each pair: 1+2.", "max_tokens": 30, "ignore_eos": True, "temperature": 0}
    url = server.url
    try:
        alone = [httpx.post(url + "/v1/completions", json=b, headers=HEADERS, timeout=120).json() for b in (long, short)]

        async def overload():
            async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=120) as http:
                async with http.stream("POST", "/v1/completions", json={**long, "stream": True}) as stream:
                    lines = stream.aiter_lines()
                    first = await anext(lines)  # the long request decodes
                    waiting = asyncio.create_task(http.post("/v1/completions", json=short))
                    for _ in range(500):  # bounded: 5 s for the short request to be admitted behind it
                        if metric(url, "multiverse_requests_in_flight") == 2:
                            break
                        await asyncio.sleep(0.01)
                    refused = await asyncio.gather(
                        http.post("/v1/completions", json=short),
                        http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
                        http.post("/generate", json={"text": "Add", "sampling_params": {"max_new_tokens": 2}}),
                    )
                    streamed = [first] + [line async for line in lines]
                return refused, streamed, await waiting

        refused, streamed, waited = asyncio.run(overload())
        for r in refused:
            error = r.json()["error"]
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and error["type"] == "service_unavailable"
            assert error["code"] == "queue_full" and "--max-waiting 1" in error["message"]
        pieces = [json.loads(line[6:]) for line in streamed if line.startswith("data: {")]
        assert "".join(p["choices"][0]["text"] for p in pieces) == alone[0]["choices"][0]["text"]
        assert waited.status_code == 200 and waited.json()["choices"] == alone[1]["choices"]
        assert metric(url, 'multiverse_rejected_requests_total{reason="queue_full"}') == 3
        batch = httpx.post(url + "/generate", headers=HEADERS, json={"input_ids": [[5], [6], [7]]})
        assert batch.status_code == 400 and batch.json()["error"]["code"] == "batch_too_large"
        again = httpx.post(url + "/v1/completions", json=short, headers=HEADERS, timeout=120)
        assert again.status_code == 200 and again.json()["choices"] == alone[1]["choices"]
    finally:
        server.stop()
    assert lm.pool.num_used == 0
