"""The SGLang client under slow and failing servers (CI, against `multiverse serve`'s `/generate` on loopback).

- Bounded calls: a served engine slowed to ~20 tokens/s (`step_delay_s`) and a client timeout of 1.5 s; a
  sequential stretch needing 4x the timeout completes token-identical to native, because it is decoded in
  calls of `call_tokens`; the same stretch in one call times out (the control).
- One failing call: a real proxy between client and server fails one chosen batched call (a 500 or a hang past
  the timeout). Failing for good, it ends exactly the requests with an input in that call, each with the cause
  in `error`; every other request is identical to the native run. Failing once, the re-send cures it.
- The server going away mid-run: every request ends with an error, nothing hangs.
- Evicted merged blocks: a proxy that keeps the prefix tree a plugin server would hold evicts all of it before
  each new merge call and refuses calls as the plugin does; the client re-prefills the evicted blocks' paths
  (recursively: a refused re-prefill gets its own evicted block rebuilt first) and every request is identical.
"""
from __future__ import annotations

import random
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from evict_proxy import EvictingProxy  # noqa: E402
from fault_proxy import FaultProxy, requests_in  # noqa: E402
from sglang_scripted import ScriptedServedLM, scripted_jobs  # noqa: E402
from sglang_support import random_block  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402
from multiverse.tiny import build_model  # noqa: E402
from tests.server_support import start  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
STRETCH = " so 12" * 60  # 120 tokens written one after the other (no structure event to end a segment)


@pytest.fixture(scope="module")
def native(tok):
    return MultiverseLM(build_model(tok, seed=7), tok)


@pytest.fixture(scope="module")
def served(tok):
    lm = ScriptedServedLM(build_model(tok, seed=7), tok)
    server = start(lm, model_name="tiny")
    yield lm, server
    server.stop()
    assert lm.pool.num_used == 0


def client_of(tok, url: str, **options) -> MultiverseLM:
    return MultiverseLM(tokenizer=tok, backend="sglang", url=url, **options)


def bare(params):
    return [replace(p, logits_processors=()) for p in params]


def identical(a, b) -> None:
    assert b.token_ids == a.token_ids and b.finish_reason == a.finish_reason and b.error is None
    assert [(i.label, i.text) for i in b.tree] == [(i.label, i.text) for i in a.tree]


def test_a_stretch_of_four_timeouts_completes_in_bounded_calls(tok, native):
    lm = ScriptedServedLM(build_model(tok, seed=7), tok, step_delay_s=0.05)  # ~20 tokens/s: 120 tokens ~ 6 s
    server = start(lm, model_name="tiny")
    rng = random.Random(4)
    bodies = ["Plan:" + STRETCH + random_block(rng) + " done", "Short:" + STRETCH]
    prompts, params, lm.script = scripted_jobs(tok, bodies, max_new_tokens=1000)
    want = native.generate(prompts, params)
    try:
        bounded = client_of(tok, server.url, timeout_s=1.5, call_tokens=6, retries=0)
        got = bounded.generate(prompts, bare(params))
        bounded.close()
        calls, resends = bounded.wire.calls, bounded.wire.resends
        whole = client_of(tok, server.url, timeout_s=1.5, call_tokens=10_000, retries=0)  # the control: one call
        control = whole.generate(prompts[1:], bare(params[1:]))[0]
        whole.close()
    finally:
        server.stop()
    for a, b in zip(want, got):
        identical(a, b)
    assert all(a.stats.generated_tokens >= 120 for a in want)
    assert calls >= 120 // 6 and resends == 0  # many short calls, none of them near the timeout
    assert control.finish_reason == "error" and "no answer within 1.5 s" in control.error and "failed 1 times" in control.error


@pytest.fixture(scope="module")
def jobs(tok, native):
    """Five scripted requests (one block each, some nested) and their native outputs."""
    rng = random.Random(11)
    bodies = [f"Step {i}:" + random_block(rng, nest=0.4) + " so 12 done" for i in range(5)]
    prompts, params, union = scripted_jobs(tok, bodies, max_new_tokens=600)
    return prompts, params, union, native.generate(prompts, params)


def fault_run(tok, jobs, served, mode: str, times: int | None):
    """The jobs at once through a proxy that fails one call of at most 2 inputs (from the 4th call on); calls
    of 8 tokens stay far below the 2 s timeout, a hang of 3 s passes it."""
    lm, server = served
    prompts, params, lm.script, want = jobs
    proxy = FaultProxy(server.url, mode, after=3, max_inputs=2, times=times, hang_s=3.0).start()
    client = client_of(tok, proxy.url, timeout_s=2.0, call_tokens=8, retries=2, retry_wait_s=0.05)
    try:
        got = client.generate(prompts, bare(params))
    finally:
        client.close()
        proxy.stop()
    assert client.wire.resends == min(proxy.failed, 2)  # every failure of the chosen call was re-sent, up to retries
    return want, got, proxy, requests_in(proxy.chosen_inputs, prompts)


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_call_failing_for_good_ends_only_its_requests(tok, jobs, served, mode):
    want, got, proxy, hit = fault_run(tok, jobs, served, mode, times=None)
    assert proxy.chosen is not None and proxy.failed == 3  # the call and its two re-sends
    assert 1 <= len(hit) <= 2
    cause = "answered 500" if mode == "500" else "no answer within 2 s"
    for i, (a, b) in enumerate(zip(want, got)):
        if i in hit:
            assert b.finish_reason == "error" and "failed 3 times" in b.error and cause in b.error, b.error
        else:
            identical(a, b)


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_call_failing_once_is_sent_again(tok, jobs, served, mode):
    want, got, proxy, hit = fault_run(tok, jobs, served, mode, times=1)
    assert proxy.failed == 1 and hit
    for a, b in zip(want, got):
        identical(a, b)


def test_a_server_gone_mid_run_ends_every_request_with_an_error(tok, served):
    lm, server = served
    rng = random.Random(2)
    prompts, params, lm.script = scripted_jobs(tok, ["Go:" + STRETCH + random_block(rng) for _ in range(4)], max_new_tokens=1000)
    proxy = FaultProxy(server.url, "hang", after=3, hang_s=0.5, times=1).start()  # one slow call, then it is gone
    client = client_of(tok, proxy.url, timeout_s=5.0, call_tokens=4, retries=1, retry_wait_s=0.05)
    out: list = []
    runner = threading.Thread(target=lambda: out.extend(client.generate(prompts, bare(params))), daemon=True)
    runner.start()
    while proxy.calls < 4:
        runner.join(0.05)
    proxy.stop()  # the listening socket closes: every later call is refused
    runner.join(60)
    client.close()
    assert not runner.is_alive(), "the client hung after its server went away"
    assert len(out) == 4 and all(o.finish_reason == "error" and "failed 2 times" in o.error for o in out), [o.error for o in out]


def test_evicted_blocks_are_rebuilt_recursively_and_stay_identical(tok, native, served):
    lm, server = served
    rng = random.Random(6)
    bodies = [f"Step {i}:" + random_block(rng, nest=0.9) + " so" + random_block(rng, nest=0.0) + " done" for i in range(2)]
    prompts, params, lm.script = scripted_jobs(tok, bodies, max_new_tokens=1000)
    want = native.generate(prompts, params)
    proxy = EvictingProxy(server.url, StructureVocab.from_tokenizer(tok)).start()
    client = client_of(tok, proxy.url, call_tokens=16)
    try:
        got = client.generate(prompts, bare(params))
    finally:
        client.close()
        proxy.stop()
    for a, b in zip(want, got):
        identical(a, b)
    tags = StructureVocab.from_tokenizer(tok).tags
    assert proxy.evictions == sum(a.stats.num_merges for a in want) >= 4
    assert any(r[-1] == tags.conclusion_open for r in proxy.refused)  # merges met evicted children
    assert proxy.refused_after_served(), "no re-prefill was refused in turn: the recursion was not exercised"
    assert sum(b.stats.merges_reissued for b in got) >= len(proxy.refused) and sum(b.stats.paths_reprefilled for b in got) > 0


@pytest.mark.parametrize("flags, message", [(["--sglang-call-tokens", "0"], "--sglang-call-tokens 0: must be >= 1"),
                                            (["--sglang-timeout", "0"], "--sglang-timeout 0.0: must be > 0 seconds")])
def test_the_client_flags_are_checked_before_anything_loads(capsys, flags, message):
    from multiverse.cli import main

    assert main(["generate", "hi", "--backend", "sglang", "--url", "http://127.0.0.1:9", *flags]) == 2
    assert message in capsys.readouterr().err
