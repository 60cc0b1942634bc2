"""The curator's client against the scripted server on 127.0.0.1: which endpoint errors are retried, the whole-call
timeout, Retry-After, JSON wrapped in prose, strict json_schema requests, token usage and the rate limiter."""
from __future__ import annotations

import asyncio
import time

import pytest
import yaml

from curate_support import config_dict, make_input
from data_pipeline import curate
from data_pipeline.cache import ResponseCache
from data_pipeline.config import from_dict
from data_pipeline.llm import LLM, EndpointError
from data_pipeline.scripted_server import ScriptedServer, ServerConfig


def _cfg(tmp_path, server, rows=2, **sections):
    make_input(tmp_path / "in.jsonl", rows=rows, sentences=20)
    sections.setdefault("tokenizer", None)
    return config_dict(tmp_path / "in.jsonl", tmp_path / "out", server.base_url, **sections)


@pytest.mark.parametrize("status", ["400", "401", "403", "404"])
def test_refusals_are_permanent_failures_never_sent_again(tmp_path, status) -> None:
    with ScriptedServer(ServerConfig(fault_rate=1.0, faults=(status,), max_seconds=60)) as server:
        cfg = _cfg(tmp_path, server)
        result = curate(cfg)
        assert server.requests == 2  # one request per sample: no retry
        assert [f["retryable"] for f in result.failed] == [False, False]
        assert all(f"http_{status} (permanent" in f["reasons"][-1]["reason"] for f in result.failed)
        assert result.report["calls"]["retries"] == 0
        again = curate(cfg)
        assert server.requests == 2 and len(again.failed) == 2  # the next run does not send them again


def test_exit_code_and_retry_failed(tmp_path) -> None:
    """`multiverse curate` exits 1 when samples failed (0 with --allow-failed); --retry-failed redoes them."""
    from multiverse.cli import main

    with ScriptedServer(ServerConfig(fault_rate=1.0, faults=("400",), max_seconds=60)) as server:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(_cfg(tmp_path, server)))
        assert main(["curate", "--config", str(config)]) == 1
        assert main(["curate", "--config", str(config), "--allow-failed"]) == 0
    with ScriptedServer(ServerConfig(max_seconds=60)) as healthy:
        over = [f"llm.base_url={healthy.base_url}"]
        assert main(["curate", "--config", str(config), "--set", over[0]]) == 1  # failures stay failures
        assert healthy.requests == 0
        assert main(["curate", "--config", str(config), "--set", over[0], "--retry-failed"]) == 0
        assert healthy.requests > 0
    report = yaml.safe_load((tmp_path / "out" / "report.json").read_text())
    assert report["converted"] == 2 and report["failed"] == 0


def test_retryable_errors_wait_as_retry_after_says(tmp_path) -> None:
    server_cfg = ServerConfig(fault_rate=0.3, faults=("429", "500"), retry_after=0.5, seed=3, max_seconds=60)
    with ScriptedServer(server_cfg) as server:
        result = curate(_cfg(tmp_path, server, rows=1, run={"concurrency": 1}))
    assert result.report["converted"] == 1
    faulted = [i for i, f in enumerate(server.drawn) if f in ("429", "500")]
    assert faulted and result.report["calls"]["retries"] == len(faulted)
    for i in faulted:  # the retry is the next request with the same body
        j = next(j for j in range(i + 1, len(server.bodies)) if server.bodies[j] == server.bodies[i])
        assert server.arrivals[j] - server.arrivals[i] >= 0.45  # backoff alone is <= backoff_max = 0.05 s


def test_timeout_bounds_the_whole_call() -> None:
    """A reply trickled over 6 s (a piece every 0.6 s, so no single read waits 1 s) fails after llm.timeout=1."""
    async def ask(base_url: str) -> float:
        cfg = from_dict({"llm": {"base_url": base_url, "model": "scripted", "api_key": "t", "timeout": 1.0},
                         "run": {"max_retries": 0}})
        llm = LLM(cfg.llm.resolved(), cfg.run, ResponseCache("unused", enabled=False))
        start = time.monotonic()
        try:
            with pytest.raises(EndpointError, match="timeout after 1 tries") as err:
                await llm.complete([{"role": "user", "content": "numbered sentences:\n[1] A."}], "steps", {}, 1)
            assert err.value.retryable
            return time.monotonic() - start
        finally:
            await llm.close()

    with ScriptedServer(ServerConfig(fault_rate=1.0, faults=("trickle",), trickle_seconds=6.0)) as server:
        elapsed = asyncio.run(ask(server.base_url))
    assert elapsed < 4.0  # about 1 s; the reply would have taken 6 s


def test_prose_wrapped_json_is_used_and_requests_are_strict(tmp_path) -> None:
    with ScriptedServer(ServerConfig(fault_rate=1.0, faults=("prose",), max_seconds=60)) as server:
        result = curate(_cfg(tmp_path, server, llm={"prompt_price": 2.0, "completion_price": 10.0}))
    assert result.report["converted"] == 2
    for rec in result.curated:
        assert rec["provenance"]["rejections"] == 0 and set(rec["provenance"]["attempts"].values()) == {1}
    for body in server.bodies:
        spec = body["response_format"]["json_schema"]
        assert spec["strict"] is True and spec["schema"]["additionalProperties"] is False
    # usage: the server counts words of prompt and reply; the report adds up every reply's usage
    prompt = sum(len(str(m["content"]).split()) for b in server.bodies for m in b["messages"])
    tokens = result.report["tokens"]
    assert tokens["calls"] == server.requests and tokens["prompt_tokens"] == prompt
    assert tokens["cost"] == pytest.approx((2.0 * prompt + 10.0 * tokens["completion_tokens"]) / 1e6, abs=1e-4)
    assert result.report["calls"]["prompt_tokens"] == prompt


def test_rpm_limits_requests_in_any_window(tmp_path) -> None:
    """run.rpm=5 per 1 s window: counted on the server's clock, any 0.9 s holds at most 6 requests."""
    with ScriptedServer(ServerConfig(max_seconds=60)) as server:
        result = curate(_cfg(tmp_path, server, run={"concurrency": 8, "rpm": 5, "rate_window": 1.0}))
    t = server.arrivals
    assert result.report["converted"] == 2 and len(t) > 10
    assert max(sum(a <= b < a + 0.9 for b in t) for a in t) <= 6
    assert result.report["calls"]["rate_limited_s"] > 0


def test_tpm_limits_tokens_in_any_window(tmp_path) -> None:
    """run.tpm=1000 per 1 s window: the prompt words (the server's usage) of the requests arriving in any 0.9 s
    stay within 1.5 x the limit (a request books characters / 4 when it starts, its usage when it returns, and
    words and characters / 4 differ); unlimited, the same requests arrive within a fraction of a second."""
    with ScriptedServer(ServerConfig(max_seconds=60)) as server:
        result = curate(_cfg(tmp_path, server, rows=1, run={"concurrency": 8, "tpm": 1000, "rate_window": 1.0}))
    assert result.report["converted"] == 1
    used = [sum(len(str(m["content"]).split()) for m in b["messages"]) for b in server.bodies]
    t = server.arrivals
    assert sum(used) > 2 * 1000  # enough traffic to need the limiter
    windows = [sum(u for b, u in zip(t, used) if a <= b < a + 0.9) for a in t]
    assert max(windows) <= 1500 < sum(used) - max(used)
    assert result.report["calls"]["rate_limited_s"] > 0
