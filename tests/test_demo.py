"""The tiny reproduction: toy data is canonical and faithful; the shipped default model really forks."""
from __future__ import annotations

import os
import random

import pytest

from multiverse.demo.toy import column_sum, toy_row
from multiverse.structure import canonicalize, parse, sequential_twin

ASSET = os.path.join(os.path.dirname(__file__), "..", "multiverse", "assets", "tiny-multiverse")


def test_toy_rows_are_canonical_and_faithful() -> None:
    rng = random.Random(0)
    for _ in range(200):
        row = toy_row(rng)
        trace = row["deepseek_thinking_trajectory_parallel"]
        assert canonicalize(trace) == trace
        (block,) = list(parse(trace).blocks())
        sums = [int(s) for s in row["deepseek_attempt"].split(", ")]
        assert len(block.paths) == len(sums)
        assert row["deepseek_thinking_trajectory"] == sequential_twin(trace)
        for s in sums:
            assert f"= {s}" in row["deepseek_thinking_trajectory"]


@pytest.mark.parametrize("a,b", [(0, 0), (9, 1), (48, 26), (49, 49)])
def test_column_sum_is_right(a: int, b: int) -> None:
    text = column_sum(a, b)
    assert text.endswith(f"so {a}+{b} = {a + b}")
    assert f"= {a % 10 + b % 10}," in text


@pytest.mark.skipif(not os.path.isdir(ASSET), reason="default model not built (python -m multiverse.demo.build)")
def test_default_model_generates_in_parallel() -> None:
    from multiverse import MultiverseLM, SamplingParams

    lm = MultiverseLM(ASSET)
    rng = random.Random(123)
    rows = [toy_row(rng) for _ in range(8)]
    prompts = [[{"role": "user", "content": row["question"]}] for row in rows]
    outs = lm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=400))
    for o, row in zip(outs, rows):
        pairs = row["question"].count("+")
        assert o.finish_reason == "stop" and o.stats.num_forks == 1
        assert [b.finish_reason for b in o.tree[1:]] == ["path_end"] * pairs  # one path per addition
        assert o.stats.degree_of_parallelism > 1.1
    answers = [o.text.rsplit("Answer: ", 1)[-1].split("<")[0].strip() for o in outs]
    assert sum(a == row["deepseek_attempt"] for a, row in zip(answers, rows)) >= 4  # measured: 76 of 100
