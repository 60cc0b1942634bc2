"""`multiverse serve` around its edges: a dead engine loop, graceful shutdown, admission behind a big prompt,
and the checks that run before the model loads. Real servers on 127.0.0.1, each bounded."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from engine.api import MultiverseLM
from multiverse.cli import main
from multiverse.demo import DEFAULT_MODEL
from multiverse.tiny import build_model
from tests.server_support import HTTP_TIMEOUT_S, start, wait_ready, wait_until


class FailingLM(MultiverseLM):
    """A real engine whose loop breaks when told to (a bug outside any one request's input)."""

    broken = False

    def step(self):
        if self.broken:
            raise RuntimeError("injected engine fault")
        return super().step()


def test_a_dead_engine_loop_fails_health_and_every_waiting_request(tok, one_thread):
    lm = FailingLM(build_model(tok), tok)
    server = start(lm, model_name="tiny")
    body = {"prompt": "x", "max_tokens": 3000, "ignore_eos": True}
    try:
        async def main():
            async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT_S) as http:
                async def stream():
                    async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                        return [line async for line in r.aiter_lines() if line]
                waiting = asyncio.create_task(http.post("/v1/completions", json=body))
                streaming = asyncio.create_task(stream())
                await asyncio.sleep(0.5)
                lm.broken = True
                return await waiting, await streaming, await http.post("/v1/completions", json=body)

        waiting, streamed, later = asyncio.run(main())
        assert waiting.status_code == 503 and "injected engine fault" in waiting.json()["error"]["message"]
        assert "injected engine fault" in streamed[-2] and streamed[-1] == "data: [DONE]"
        assert later.status_code == 503
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and "injected engine fault" in health.json()["error"]
    finally:
        server.stop()


def test_graceful_shutdown_finishes_short_requests_aborts_long_ones_and_exits(tok, one_thread):
    lm = MultiverseLM(build_model(tok), tok, check_integrity=True)
    server = start(lm, model_name="tiny", shutdown_timeout_s=3.0)
    results = {}

    def read(name, body):
        try:
            with httpx.stream("POST", server.url + "/v1/completions", json={**body, "stream": True}, timeout=HTTP_TIMEOUT_S) as r:
                results[name] = [line for line in r.iter_lines() if line]
        except httpx.HTTPError as err:  # the long stream is cut when the grace period ends
            results[name] = err

    readers = [threading.Thread(target=read, args=("short", {"prompt": "x", "max_tokens": 40, "ignore_eos": True})),
               threading.Thread(target=read, args=("long", {"prompt": "x", "max_tokens": 100000, "ignore_eos": True}))]
    for t in readers:
        t.start()
    assert wait_until(lambda: len(lm.scheduler.running) == 2)  # both decode when the signal comes
    began = time.monotonic()
    server.stop(timeout=20)
    for t in readers:
        t.join(10)
    assert time.monotonic() - began < 15 and not server._thread.is_alive() and not server.client.healthy
    assert results["short"][-1] == "data: [DONE]" and '"finish_reason": "length"' in results["short"][-2]
    long = results["long"]
    assert isinstance(long, Exception) or long[-1] != "data: [DONE]"  # cut, not run to 100000 tokens
    assert lm.pool.num_used == 0 and not lm.has_work()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=2)


def test_small_prompts_are_not_blocked_behind_one_that_does_not_fit(tok, one_thread):
    """A pool of 24 pages: a running request holds 12+ of them, so a 200-token prompt (13 pages) must wait;
    4-token prompts behind it pass it instead of waiting for the running one to finish (it did, before)."""
    lm = MultiverseLM(build_model(tok), tok, num_pages=24, page_size=16, reserve_pages=2)
    server = start(lm, model_name="tiny")
    order = []
    try:
        async def one(http, name, body):
            r = await http.post("/v1/completions", json=body)
            order.append((name, r.status_code))

        async def hog_stream(http, started):
            body = {"prompt": [6] * 180, "max_tokens": 150, "ignore_eos": True, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as r:
                async for _ in r.aiter_lines():
                    started.set()  # the hog holds its pages from its first chunk on
            order.append(("hog", r.status_code))

        async def until(condition):
            for _ in range(2000):  # bounded: 10 s
                if condition():
                    return
                await asyncio.sleep(0.005)
            raise AssertionError("the server never reached the expected state")

        async def main():
            async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT_S) as http:
                started = asyncio.Event()
                hog = asyncio.create_task(hog_stream(http, started))
                await started.wait()
                big = asyncio.create_task(one(http, "big", {"prompt": [5] * 200, "max_tokens": 2}))
                await until(lambda: len(lm.scheduler.waiting) == 1)  # the big prompt waits: it does not fit
                await asyncio.gather(*[one(http, f"small{i}", {"prompt": [7, 8, 9, 10], "max_tokens": 2}) for i in range(3)])
                await asyncio.gather(hog, big)

        asyncio.run(main())
    finally:
        server.stop()
    names = [name for name, _ in order]
    assert all(status == 200 for _, status in order), order
    last_small = max(names.index(f"small{i}") for i in range(3))
    assert last_small < names.index("hog") < names.index("big"), names


def test_serve_checks_its_input_before_loading_the_model(capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        began = time.monotonic()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2
        assert time.monotonic() - began < 5 and "--port" in capsys.readouterr().err
    finally:
        taken.close()
    assert main(["serve", "--model", "no/such/model/dir", "--port", "0"]) == 2
    assert "no/such/model/dir" in capsys.readouterr().err
    assert main(["serve", "--max-model-len", "1", "--port", "0"]) == 2
    assert main(["serve", "--model", str(DEFAULT_MODEL), "--max-model-len", "100000", "--port", "0"]) == 2
    assert "position range is 4096" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--dtype", "float8"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_the_serve_command_answers_and_stops_on_sigterm(tmp_path):
    """The real command line: default model, one log line per request, SIGTERM -> graceful exit 0."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "multiverse.cli", "serve", "--port", str(port), "--api-key", "k"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        wait_ready(proc, url)
        r = httpx.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer k"}, timeout=HTTP_TIMEOUT_S,
                       json={"messages": [{"role": "user", "content": "Add each pair: 2+3."}], "max_tokens": 200, "temperature": 0})
        assert r.status_code == 200 and r.json()["model"] == "multiverse"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "serve.log").read_text()
    assert f"{r.json()['id']} POST /v1/chat/completions 200" in text and "KV pages in use: 0" in text


def test_dtype_flag_sets_the_weights_and_the_kv_pool():
    import argparse

    import torch

    from engine.server import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    lm = cli._build(parser.parse_args(["--tiny", "--dtype", "bfloat16", "--num-pages", "8"]))
    assert next(lm.model.parameters()).dtype == torch.bfloat16 and lm.pool.k.dtype == torch.bfloat16
