"""The path cap (engine/path_cap.py): with `max_concurrent_paths` or the factor rule, the shipped model writes
exactly the tokens of the uncapped run (greedy and sampled), while fewer paths decode at once."""
from __future__ import annotations

import math

import pytest

from engine import path_cap
from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.demo import DEFAULT_MODEL
from multiverse.evaluation.analysis import validity
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.runner import build_prompt
from multiverse.evaluation.tasks import load_task
from multiverse.tags import TagIds


@pytest.fixture(scope="module")
def lm(one_thread):
    return MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)


@pytest.fixture(scope="module")
def prompts(lm):
    return [build_prompt(p, EvalConfig(), lm.tokenizer) for p in load_task("remainders", limit=2)]


def test_factor_rule_and_outline_confidences(tok):
    assert path_cap.factor_count([0.99, 0.9, 0.5], 1.0) == 2  # 2*0.01, 3*0.1 < 1; 4*0.5 is not
    assert path_cap.factor_count([0.2, 0.1], 0.5) == 1  # never below one
    assert path_cap.plan([0.5, 0.9, 0.7], SamplingParams(max_concurrent_paths=2)) == ([1, 2, 0], 2)
    tags = TagIds.from_tokenizer(tok)
    ids = [tags.goal_open, tags.outline_open, 40, 41, tags.outline_close, tags.outline_open, 42, tags.outline_close, tags.goal_close]
    lps = [None, None, math.log(0.5), math.log(1.0), None, None, None, None, None]
    assert path_cap.outline_confidences(ids, lps, tags) == [0.75, 1.0]  # unsampled outline: 1.0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_capped_runs_write_the_uncapped_tokens(lm, prompts, temperature):
    common = dict(max_new_tokens=1500, temperature=temperature, seed=7)
    free = lm.generate(prompts, SamplingParams(**common))
    assert all(o.stats.num_forks >= 1 and o.finish_reason == "stop" for o in free)
    for cap in ({"max_concurrent_paths": 1}, {"max_concurrent_paths": 2}, {"path_rule": "factor", "path_factor": 1.0}):
        capped = lm.generate(prompts, SamplingParams(**common, **cap))
        for a, b in zip(free, capped):
            assert a.token_ids == b.token_ids and a.text == b.text, cap
            assert b.stats.peak_paths <= cap.get("max_concurrent_paths", 99) < a.stats.peak_paths or "path_rule" in cap
            # every path's KV is needed at the merge: the peak is the same, reached later
            assert b.stats.peak_kv_pages == a.stats.peak_kv_pages


def test_held_back_paths_close_well_formed_when_the_budget_ends(lm, prompts):
    out = lm.generate(prompts[:1], SamplingParams(max_new_tokens=60, temperature=0, max_concurrent_paths=1))[0]
    assert out.finish_reason == "length" and out.stats.num_forks == 1
    held = [b for b in out.tree if b.text == f"<Path>{b.label}:</Path>"]  # its forced prefix, then a forced </Path>
    assert len(held) >= 2 and all(b.finish_reason == "length" for b in held)
    assert lm.pool.num_used == 0
    text = out.raw_text
    assert text.count("<Path>") == text.count("<Outline>") == text.count("</Path>")
    assert validity(text + "<Conclusion></Conclusion></Parallel></Think>").valid
