"""Metrics: unbiased pass@k, standard errors, cons@k; SPEC §7 counts equal to the core's on the reference traces
and to the engine's own Stats on a scripted generation (one definition: forced tokens are not generated)."""
from __future__ import annotations

import glob
import itertools
import math
import os
import statistics

import pytest

from engine.api import MultiverseLM
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import count_tokens
from multiverse.check import token_counts
from multiverse.data import EXAMPLES_DIR
from multiverse.encode import encode_trace
from multiverse.evaluation import Problem
from multiverse.evaluation.analysis import counts_from_text
from multiverse.evaluation.backends.base import Generation
from multiverse.evaluation.grading import equivalent
from multiverse.evaluation.metrics import cons_at_k, estimate, majority, pass_at_k
from multiverse.evaluation.report import summary
from multiverse.evaluation.runner import make_record
from multiverse.structure import parse, serialise
from multiverse.tiny import build_model

EXAMPLES = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.xml")))  # shipped in multiverse/data


@pytest.mark.parametrize("n,c,k", [(5, 2, 1), (5, 2, 3), (6, 0, 2), (6, 6, 4), (7, 3, 7), (8, 1, 5)])
def test_pass_at_k_is_the_probability_that_k_drawn_samples_hold_a_correct_one(n, c, k) -> None:
    flags = [1] * c + [0] * (n - c)
    draws = list(itertools.combinations(flags, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))


def test_estimate_standard_error_and_interval() -> None:
    e = estimate([1, 0, 1, 1])
    sd = statistics.stdev([1, 0, 1, 1])
    assert e.mean == 0.75 and e.se == pytest.approx(sd / 2) and e.n == 4
    assert e.ci95 == pytest.approx((0.75 - 1.959964 * sd / 2, 0.75 + 1.959964 * sd / 2))
    assert estimate([0.5]).se == 0.0 and math.isnan(estimate([]).mean)


def test_majority_groups_equivalent_answers_and_breaks_ties_by_first_seen() -> None:
    assert majority(["0.5", "3", "\\frac{1}{2}", "3", None, "1/2"], equivalent) == "0.5"
    assert majority(["4", "5", "5", "4"], equivalent) == "4"
    assert majority([None, None], equivalent) is None


def test_cons_at_k_per_question() -> None:
    rows = [
        {"task": "t", "id": "a", "sample": s, "kind": "math", "gold": "2", "predicted": p, "correct": p == "2"}
        for s, p in enumerate(["2", "3", "2.0", None])
    ] + [
        {"task": "t", "id": "b", "sample": s, "kind": "math", "gold": "7", "predicted": p, "correct": p == "7"}
        for s, p in enumerate(["1", "1", "7", "7"])
    ]
    got = cons_at_k(rows, 4, lambda r, a: equivalent(r["gold"], a), equivalent)
    assert got.mean == 0.5  # a: "2" wins 2-1; b: tie 1 vs 7 goes to "1" (seen first)
    assert cons_at_k(rows, 5, lambda r, a: True, equivalent) is None  # fewer than k samples


def test_counts_equal_the_core_on_reference_traces(tok) -> None:
    records, core = [], []
    for i, path in enumerate(EXAMPLES):
        with open(path, encoding="utf-8") as f:
            text = serialise(parse(f.read()))
        want = token_counts(parse(text), tok)  # what `multiverse check --tokenizer` reports
        got = counts_from_text(text, tok)
        assert (got.generated, got.forced, got.critical_path) == (want.generated, want.forced, want.critical_path)
        assert got.forced == sum(len(encode_trace(f"<Path>{p.label}:", tok, canonical=False)) for b in parse(text).blocks() for p in b.paths) + len(list(parse(text).blocks()))
        gen = Generation(text, "stop", got.generated, got.forced, got.critical_path, got.degree_of_parallelism, got.num_forks, (), 0.0)
        records.append(make_record("ex", Problem(str(i), "q", "1", "math"), 0, 0, "q", gen, ()))
        core.append(want.degree_of_parallelism)
    s = summary(records, 1)
    assert s["degree_of_parallelism"]["mean"] == pytest.approx(statistics.fmean(core))
    assert s["degree_of_parallelism"]["se"] == pytest.approx(statistics.stdev(core) / math.sqrt(len(core)))
    assert s["valid"]["mean"] == 1.0 and s["forked"]["mean"] == 1.0


def test_engine_stats_equal_the_core_counts_of_its_text(tok, one_thread) -> None:
    body = (
        "Plan: <Parallel><Goal>split<Outline>1: case one</Outline><Outline>2: case two</Outline></Goal>"
        "<Path>1: the sum<Parallel><Goal>inner<Outline>1.1: a</Outline><Outline>1.2: b</Outline></Goal>"
        "<Path>1.1: is 4</Path><Path>1.2: then 7</Path><Conclusion>so 12</Conclusion></Parallel> done</Path>"
        "<Path>2: area 6</Path><Conclusion>the answer</Conclusion></Parallel> Final"
    )
    lm = MultiverseLM(build_model(tok, seed=2), tok)
    p_ids = tok("Consider the triangle")["input_ids"]
    target = p_ids + encode_trace(body, tok) + [tok.eos_token_id]
    proc = ScriptedProcessor(target, len(p_ids), tok)
    (out,) = lm.generate([p_ids], SamplingParams(max_new_tokens=500, temperature=0, logits_processors=[proc]))
    assert proc.misses == 0 and out.stats.num_forks == 2
    s = out.stats
    core = count_tokens(target, tok, prompt_len=len(p_ids))
    from_text = counts_from_text(getattr(out, "raw_text", "") or out.text, tok)  # raw: the EOS was generated
    for c in (core, from_text):
        assert (c.generated, c.forced, c.critical_path, c.num_forks) == (s.generated_tokens, s.forced_tokens, s.critical_path, 2)
        assert c.degree_of_parallelism == s.degree_of_parallelism
    assert s.generated_tokens + s.forced_tokens == len(out.token_ids)
