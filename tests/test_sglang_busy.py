"""The plugin under load, against a REAL SGLang 0.5.23 server (marker `sglang`; skipped unless MV_SGLANG_VENV and MV_SGLANG_LAUNCH are set: see tests/sglang_support.py).

- 32 task questions and 8 scripted nested requests at once on one server: every request token-identical to
  the native engine, every merge exact (1 token prefilled: the forced <Conclusion>).
- A KV pool far too small for the work in flight (--max-total-tokens 768; 16, then 8 requests at once): merged
  blocks and their children are evicted between calls and the plugin refuses the calls that need them by name;
  the client re-prefills the evicted paths from the tokens it holds (recursively, innermost first) and sends
  the call again, so every request is token-identical to native, and nothing hangs.
Figures of each run go to stdout (`-s`) and to $MV_SGLANG_BUSY_REPORT (when set).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import needs_sglang, plugin_server, report_path, scripted_targets, write_report  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from engine.script import ScriptedProcessor  # noqa: E402
from engine.sglang.plugin.script import script_params  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.demo.remainders import held_out_rows  # noqa: E402

pytestmark = needs_sglang(3600)
REPORT = report_path("MV_SGLANG_BUSY_REPORT")
SMALL_POOL = 768  # KV slots: a few requests' sequences, far less than 16 requests in flight need


def server(tmp_path_factory, name: str, *extra: str):
    with plugin_server(str(DEFAULT_MODEL), tmp_path_factory.mktemp("sglang") / f"{name}.log", *extra) as s:
        yield s


@pytest.fixture(scope="module")
def native():
    return MultiverseLM(str(DEFAULT_MODEL))


@pytest.fixture
def roomy(tmp_path_factory):
    yield from server(tmp_path_factory, "roomy")


@pytest.fixture
def cramped(tmp_path_factory):
    yield from server(tmp_path_factory, "cramped", "--max-total-tokens", str(SMALL_POOL))


def scripted_jobs(tok, n: int, seed: int, nest: float = 0.5):
    """Prompts, native params (the script as a logits processor) and the server-side scripts of n targets
    (each: a block nested with probability `nest`, then a flat block)."""
    targets = scripted_targets(tok, n, seed=seed, nest=nest)
    native = [SamplingParams(temperature=0, max_new_tokens=2000, logits_processors=[ScriptedProcessor(t, len(p), tok)])
              for p, t in targets]
    return [p for p, _ in targets], native, [script_params(t, len(p), tok) for p, t in targets], targets


def run_both(native_lm, url: str, prompts, native_params, client_params, processors):
    want = native_lm.generate(prompts, native_params)
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=url)
    try:
        t0 = time.monotonic()
        got = lm.generate(prompts, client_params, server_processors=processors)
        wall = time.monotonic() - t0
    finally:
        lm.close()
    assert lm.server.name == "plugin"
    return want, got, wall


def test_forty_requests_at_once_identical_to_native(roomy, native):
    tok = native.tokenizer
    questions = [[{"role": "user", "content": row["question"]}] for row in held_out_rows(32)]
    task = SamplingParams(temperature=0, max_new_tokens=800)
    s_prompts, s_native, s_procs, targets = scripted_jobs(tok, 8, seed=9)
    prompts = questions + s_prompts
    client = [task] * 32 + [SamplingParams(temperature=0, max_new_tokens=2000)] * 8
    want, got, wall = run_both(native, roomy.url, prompts, [task] * 32 + s_native, client, [None] * 32 + s_procs)
    for i, (a, b) in enumerate(zip(want, got)):
        assert b.token_ids == a.token_ids and b.finish_reason == a.finish_reason, i
        assert b.stats.num_merges == a.stats.num_merges and b.stats.merges_exact == b.stats.num_merges, i
        assert b.stats.merge_prefill_tokens == [1] * b.stats.num_merges, (i, b.stats.merge_prefill_tokens)
    for a, (_, t) in zip(want[32:], targets):
        assert a.prompt_token_ids + a.token_ids == t  # the scripted ones wrote their whole nested targets
    merges = [b.stats.num_merges for b in got]
    write_report(REPORT, "forty_at_once", dict(requests=len(got), identical=sum(a.token_ids == b.token_ids for a, b in zip(want, got)),
           merges=sum(merges), merges_exact=sum(b.stats.merges_exact for b in got),
           prefill_per_merge=sorted({x for b in got for x in b.stats.merge_prefill_tokens}),
           generated_tokens=sum(b.stats.generated_tokens for b in got), wall_s=round(wall, 1)))
    assert sum(merges[:32]) >= 20 and min(merges[32:]) >= 2  # the task model answers in blocks; scripts nest


def test_eviction_in_a_small_pool_rebuilds_and_stays_identical(cramped, native):
    """16 requests (flat blocks) and then 8 (nested blocks) at once in a pool far too small for them: merged
    blocks and children are evicted between calls. Each refused call is sent again after the client re-prefilled
    the evicted paths (stats.merges_reissued, stats.paths_reprefilled): every request identical to native."""
    tok = native.tokenizer
    client = [SamplingParams(temperature=0, max_new_tokens=2000)] * 16
    figures, same = {}, []
    for name, n, nest in (("flat", 16, 0.0), ("nested", 8, 0.5)):
        prompts, s_native, s_procs, _ = scripted_jobs(tok, n, seed=5, nest=nest)
        want, got, wall = run_both(native, cramped.url, prompts, s_native, client[:n], s_procs)
        ok = [a.token_ids == b.token_ids and b.finish_reason == a.finish_reason == "stop" for a, b in zip(want, got)]
        same += ok
        figures[name] = dict(requests=n, identical=sum(ok), errors=[b.error for b in got if b.error],
                             merges=sum(b.stats.num_merges for b in got), merges_reissued=sum(b.stats.merges_reissued for b in got),
                             paths_reprefilled=sum(b.stats.paths_reprefilled for b in got),
                             merges_exact=sum(b.stats.merges_exact for b in got),
                             merges_recomputed=sum(b.stats.merges_recomputed for b in got), wall_s=round(wall, 1))
    # merges_recomputed here: a merge call that prefilled more than its <Conclusion> because path 1's own tail was
    # evicted; those tokens see only the prefix and path 1, so SGLang's causal extend computes them exactly
    write_report(REPORT, "small_pool", dict(max_total_tokens=SMALL_POOL, **figures))
    assert all(same), figures
    assert sum(f["merges_reissued"] for f in figures.values()) > 0  # the pool did evict, and the client rebuilt
