"""The SGLang plugin's pure parts, without a server: which block a merge request closes, which tokens need the
Multiverse mask, the structure rules on the wire, the version pin, the start-up checks of the server arguments,
and the scripted processor's table."""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import scripted_targets  # noqa: E402

from engine.script import ScriptedProcessor  # noqa: E402
from engine.sglang.plugin import check_version  # noqa: E402
from engine.sglang.plugin.checks import (  # noqa: E402
    SGLANG_VERSION,
    check_server_args,
    plugin_wanted,
    server_args_problems,
    version_problem,
)
from engine.sglang.plugin.script import ScriptedLogits, script_key, script_params  # noqa: E402
from engine.sglang.plugin.request_layout import RequestLayout  # noqa: E402
from engine.sglang.plugin.structure import MergePlan, plan_merge, rules_from, rules_to_params  # noqa: E402
from multiverse.attention import StructureRules, dense_mask  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402


def merges_of(target, tok):
    """Every merge request a client sends for `target`: the ids the merging branch sees (the core's mask row of
    each <Conclusion>, itself included), with its plan."""
    vocab = StructureVocab.from_tokenizer(tok)
    visible = dense_mask(target, tok)
    for c in [i for i, t in enumerate(target) if t == vocab.tags.conclusion_open]:
        ids = [target[i] for i in visible[c, : c + 1].nonzero().flatten().tolist()]
        lay = RequestLayout.of(ids, vocab)
        masked = lay.first_masked(0)
        yield ids, (plan_merge(ids, lay, masked, vocab) if masked is not None else None)


def test_plans_split_merge_requests_into_their_children(tok):
    vocab = StructureVocab.from_tokenizer(tok)
    seen = 0
    for _, target in scripted_targets(tok, 6, seed=2):
        for ids, plan in merges_of(target, tok):
            if plan is None or plan.conclusion < len(ids) - 1:
                # a one-path block: its merge is a plain prefix of its only child (any masked token left is an
                # inner block's, concluded earlier); the cache matches it like any prefix
                continue
            assert isinstance(plan, MergePlan) and plan.conclusion == len(ids) - 1
            assert plan.spans[0][0] == plan.first_path and len(plan.spans) >= 2
            for k, (s, e) in enumerate(plan.spans):
                child = plan.child(ids, k)
                assert child[plan.first_path] == vocab.tags.path_open and child[-1] == vocab.tags.path_close
                assert child[: plan.first_path] == ids[: plan.first_path] and child[plan.first_path :] == ids[s : e + 1]
            assert sum(e - s + 1 for s, e in plan.spans) == plan.conclusion - plan.first_path
            seen += 1
    assert seen >= 6


def test_only_sibling_tokens_are_masked(tok):
    vocab = StructureVocab.from_tokenizer(tok)
    _, target = scripted_targets(tok, 1, seed=4)[0]
    lay = RequestLayout.of(target, vocab)
    last = lay.first_masked(0)
    assert last is not None and lay.first_masked(last + 1) is None
    assert RequestLayout.of(target[:5], vocab).first_masked(0) is None  # before any block: plain causal text


def test_a_non_canonical_block_is_refused_with_the_tokens(tok):
    vocab = StructureVocab.from_tokenizer(tok)
    body = "<Parallel><Goal><Outline>1: a</Outline><Outline>2: b</Outline></Goal><Path>1: x</Path><Path>2: y</Path> z"
    ids = tok(body, add_special_tokens=False)["input_ids"]
    lay = RequestLayout.of(ids, vocab)
    problem = plan_merge(ids, lay, lay.first_masked(0), vocab)
    assert isinstance(problem, str) and "not followed by <Conclusion>" in problem


def test_rules_travel_in_custom_params():
    rules = StructureRules(True, 3, 2)
    assert rules_from(rules_to_params(rules)) == rules
    assert rules_from(None) == StructureRules() and rules_from({"other": 1}) == StructureRules()


def test_version_pin_fails_clearly():
    check_version("0.5.23")
    with pytest.raises(RuntimeError, match=r"needs sglang==0\.5\.23, found sglang 0\.5\.22"):
        check_version("0.5.22")


def test_scripted_logits_follow_the_same_table_as_the_engine_script(tok):
    prompt, target = scripted_targets(tok, 1, seed=1)[0]
    engine_script = ScriptedProcessor(target, len(prompt), tok)
    wire, params = script_params(target, len(prompt), tok)
    assert pickle.loads(bytes.fromhex(json.loads(wire)["callable"])) is ScriptedLogits
    assert params["multiverse_script"] == {script_key(list(k)): v for k, v in engine_script.next.items()}
    visible, want = next(iter(engine_script.next.items()))
    rows = [dict(params, __req__=SimpleNamespace(origin_input_ids=list(visible), output_ids=[])),
            dict(params, __req__=SimpleNamespace(origin_input_ids=[1, 2, 3], output_ids=[4]))]
    out = ScriptedLogits()(torch.zeros(2, len(tok)), rows)
    assert out.argmax(dim=1).tolist() == [want, tok.eos_token_id] and torch.isinf(out).sum() == 2 * (len(tok) - 1)


def args(**kw):
    """The ServerArgs fields the checks read, as a launch would resolve them (tests/test_sglang_startup.py runs
    the same checks on SGLang's own ServerArgs)."""
    base = dict(radix_cache_backend="multiverse", page_size=1, attention_backend="fa3", prefill_attention_backend=None,
                decode_attention_backend=None, dp_size=1, tp_size=1, speculative_algorithm=None,
                disable_radix_cache=False, enable_hierarchical_cache=False, enable_deterministic_inference=False)
    return SimpleNamespace(**(base | kw))


def test_deployments_the_plugin_serves_pass_the_checks():
    for ok in (args(), args(attention_backend="flashinfer", tp_size=8), args(page_size=None, attention_backend=None),
               args(enable_deterministic_inference=True, attention_backend="triton"),
               args(radix_cache_backend="radix", dp_size=4, page_size=64)):  # not ours: not our business
        assert server_args_problems(ok) == []


@pytest.mark.parametrize("kw, words", [
    (dict(dp_size=2), ["--dp-size 2", "one radix cache", "--tp-size"]),
    (dict(speculative_algorithm="EAGLE"), ["--speculative-algorithm EAGLE"]),
    (dict(attention_backend="trtllm_mha", page_size=64), ["--page-size 1 (got 64)", "trtllm_mha", "Blackwell",
                                                           "--attention-backend flashinfer"]),
    (dict(attention_backend="trtllm_mha", page_size=None), ["got larger than 1", "trtllm_mha"]),
    (dict(page_size=16), ["--page-size 1 (got 16)"]),
    (dict(disable_radix_cache=True), ["--disable-radix-cache"]),
    (dict(enable_deterministic_inference=True, attention_backend="flashinfer", disable_radix_cache=True),
     ["--enable-deterministic-inference", "flashinfer", "triton (Blackwell)"]),
])
def test_deployments_the_plugin_cannot_serve_are_refused_by_name(kw, words):
    problems = server_args_problems(args(**kw))
    assert len(problems) == 1 and all(w in problems[0] for w in words), problems
    with pytest.raises(ValueError, match="multiverse"):
        check_server_args(args(**kw))
    assert server_args_problems(args(**kw, radix_cache_backend=None), selected=True) == problems


def test_a_wrong_version_stops_only_a_server_started_for_multiverse():
    assert version_problem(SGLANG_VERSION) is None and "found sglang 0.6.0" in version_problem("0.6.0")
    assert plugin_wanted({"SGLANG_PLUGINS": "other, multiverse"}, [])
    assert plugin_wanted({}, ["x", "--radix-cache-backend", "multiverse"])
    assert plugin_wanted({}, ["x", "--radix-cache-backend=multiverse"])
    assert not plugin_wanted({"SGLANG_PLUGINS": "other"}, ["x", "--radix-cache-backend", "radix"])
