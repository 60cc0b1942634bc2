"""The SGLang backend against a REAL SGLang 0.5.23 server on loopback (marker `sglang`; skipped unless
MV_SGLANG_VENV and MV_SGLANG_LAUNCH are set: see tests/sglang_support.py:
`$MV_SGLANG_VENV/bin/pip install --no-deps -e .`).

With the plugin: SPEC §5 through SGLang: tokens identical to the native engine and logprobs within 1e-4 on the
shipped model over 30 held-out questions of its task, and scripted nested multi-block structures 8 at once; every merge exact
(1 token prefilled: the forced <Conclusion>); a child's KV evicted before its merge fails the merge visibly.
Without the plugin: the approximate route is refused unless asked for; asked for, its divergence is measured.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import VENV, SGLangServer, needs_sglang, report_path, scripted_targets, write_report  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from engine.script import ScriptedProcessor  # noqa: E402
from engine.sglang.client import ApproximateMergeRefused  # noqa: E402
from engine.sglang.http import GenerateCall, Wire  # noqa: E402
from engine.sglang.plugin.script import script_params  # noqa: E402
from engine.sglang.plugin.request_layout import RequestLayout  # noqa: E402
from engine.sglang.plugin.structure import MergePlan, plan_merge  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.demo.remainders import held_out_rows  # noqa: E402

pytestmark = needs_sglang(2400)
REPORT = report_path("MV_SGLANG_REPORT")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("sglang")
    plugin = SGLangServer(VENV, str(DEFAULT_MODEL), True, logs / "plugin.log")
    stock = SGLangServer(VENV, str(DEFAULT_MODEL), False, logs / "stock.log")
    try:
        plugin.wait()
        stock.wait()
        yield plugin, stock
    finally:
        plugin.close()
        stock.close()


@pytest.fixture(scope="module")
def native():
    return MultiverseLM(str(DEFAULT_MODEL))


def task_prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": row["question"]}] for row in held_out_rows(n)]


def test_task_questions_identical_to_native(servers, native):
    prompts = task_prompts(30)
    params = SamplingParams(temperature=0, max_new_tokens=800, logprobs=True)
    want = native.generate(prompts, params)
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=servers[0].url)
    try:
        got = lm.generate(prompts, params)
    finally:
        lm.close()
    assert lm.server.name == "plugin"
    merges = 0
    for a, b in zip(want, got):
        assert b.token_ids == a.token_ids
        assert b.finish_reason == a.finish_reason
        pairs = [(x, y) for x, y in zip(a.logprobs, b.logprobs) if x is not None]
        assert all(y is not None and abs(x - y) <= 1e-4 for x, y in pairs)
        assert [i.label for i in b.tree] == [i.label for i in a.tree]
        assert b.stats.merges_exact == a.stats.num_merges == b.stats.num_merges
        assert b.stats.merges_recomputed == 0 and b.stats.merge_prefill_tokens == [1] * a.stats.num_merges
        merges += a.stats.num_merges
    assert merges >= 20  # the default model answers in blocks


def test_scripted_nested_blocks_eight_at_once(servers, native):
    tok = native.tokenizer
    targets = scripted_targets(tok, 8, seed=5, nest=0.5)
    prompts = [p for p, _ in targets]
    procs = [ScriptedProcessor(t, len(p), tok) for p, t in targets]
    want = native.generate(prompts, [SamplingParams(temperature=0, max_new_tokens=2000, logits_processors=[q]) for q in procs])
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=servers[0].url)
    try:
        got = lm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=2000),
                          server_processors=[script_params(t, len(p), tok) for p, t in targets])
    finally:
        lm.close()
    for a, b, (p, t) in zip(want, got, targets):
        assert a.prompt_token_ids + a.token_ids == t
        assert b.token_ids == a.token_ids and b.finish_reason == "stop"
        assert b.stats.num_merges == a.stats.num_merges >= 2 and b.stats.critical_path == a.stats.critical_path
        assert b.stats.merges_exact == b.stats.num_merges and set(b.stats.merge_prefill_tokens) == {1}


def simple_merge(tok, vocab):
    """A merge request whose block has >= 2 paths and no nested block: (children's sequences, merge ids)."""
    for seed in range(50):
        (_, target), = scripted_targets(tok, 1, seed=seed)
        for c in [i for i, x in enumerate(target) if x == vocab.tags.conclusion_open]:
            ids = target[: c + 1]
            lay = RequestLayout.of(ids, vocab)
            masked = lay.first_masked(0)
            plan = plan_merge(ids, lay, masked, vocab) if masked is not None else None
            if isinstance(plan, MergePlan) and plan.conclusion == c and len(plan.spans) >= 2:
                children = [plan.child(ids, k) for k in range(len(plan.spans))]
                if all(RequestLayout.of(ch, vocab).first_masked(0) is None for ch in children):
                    return children, ids
    raise AssertionError("no simple block in the scripted targets")


def test_evicted_child_fails_the_merge_visibly_then_reissued(servers, native):
    url = servers[0].url
    children, merge = simple_merge(native.tokenizer, native.vocab)

    wire = Wire(url)
    close = lambda ids_list: wire.post_batch([GenerateCall(ids, {"max_new_tokens": 1}) for ids in ids_list])  # noqa: E731
    try:
        close(children)
        assert close([merge])[0].cached_tokens == len(merge) - 1  # the children's KV, reused
        assert httpx.post(url + "/flush_cache", timeout=60).status_code == 200
        refused = close([merge])[0]  # the children's KV is gone: refused, never recomputed causally
        assert refused.aborted and "multiverse merge failed" in refused.aborted and "evicted" in refused.aborted
        close(children)  # the client's re-issue: the paths' KV again, then the merge
        again = close([merge])[0]
        assert not again.aborted and again.cached_tokens == again.prompt_tokens - 1 == len(merge) - 1
    finally:
        wire.close()


def test_stock_sglang_is_refused_unless_approximate_then_divergence_reported(servers, native):
    url = servers[1].url
    with pytest.raises(ApproximateMergeRefused, match="--radix-cache-backend multiverse"):
        MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=url)
    prompts = task_prompts(6)
    params = SamplingParams(temperature=0, max_new_tokens=800)
    want = native.generate(prompts, params)
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=url, approximate=True)
    try:
        got = lm.generate(prompts, params)
    finally:
        lm.close()
    assert lm.server.name == "stock" and lm.approximate
    first_diff = [next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None) for a, b in zip(want, got)]
    report = {
        "questions": len(prompts),
        "identical": sum(d is None and a.token_ids == b.token_ids for d, a, b in zip(first_diff, want, got)),
        "first_divergent_token": first_diff,
        "merges_recomputed": sum(b.stats.merges_recomputed for b in got),
        "merges_exact": sum(b.stats.merges_exact for b in got),
    }
    write_report(REPORT, "approximate route", report)
    assert report["merges_exact"] == 0 and report["merges_recomputed"] == sum(b.stats.num_merges for b in got) > 0
    assert report["identical"] < len(prompts)  # siblings visible and contiguous positions change the tokens


def test_plugin_refuses_page_size_above_one():
    code = (
        "from types import SimpleNamespace as N\n"
        "from engine.sglang.plugin.cache import make_factory\n"
        "ctx = N(server_args=N(page_size=16, tokenizer_path='x', model_path='x'), is_hybrid_swa=False,"
        " is_hybrid_ssm=False, enable_hierarchical_cache=False, disable_radix_cache=False)\n"
        "try:\n    make_factory()(ctx)\nexcept ValueError as e:\n    print(e)\n"
    )
    env = dict(os.environ, SGLANG_CPU_STUBS="1", SGLANG_USE_CPU_ENGINE="1")
    out = subprocess.run([str(Path(VENV, "bin", "python")), "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "requires --page-size 1 (got 16)" in out.stdout, out.stderr[-2000:]
