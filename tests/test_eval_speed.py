"""Paired speed on a scripted structure with forks (engine/script.py): ABBA order, paired ratios, both sides
graded, a speedup only against a baseline (forks off is a ratio, said to be no baseline), no extrapolated figure,
and no ratio for a run that never forked. Timings are measured, never asserted."""
from __future__ import annotations

import json

import pytest

from engine.api import MultiverseLM
from engine.script import ScriptedProcessor
from multiverse.attention.scanner import StructureRules
from multiverse.encode import encode_trace
from multiverse.evaluation import Problem
from multiverse.evaluation.backends.native import NativeBackend
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.runner import build_prompt
from multiverse.evaluation.speed import compare_sequential, print_speed
from multiverse.tiny import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

FORKED = (
    "<Parallel><Goal>two cases<Outline>1: case one</Outline><Outline>2: case two</Outline></Goal>"
    "<Path>1: the sum is 4 then 7 so 12</Path><Path>2: the area 6 check x so 12</Path>"
    "<Conclusion>the answer</Conclusion></Parallel> Answer: 12"
)
PLAIN = "the sum is 4 then 7 so 12, the area 6 check x. Answer: 12"


def backends(tok, body: str, config: EvalConfig, problem: Problem, seq_body: str | None = None) -> tuple[NativeBackend, NativeBackend]:
    model = build_model(tok, hidden_size=64, num_layers=2, seed=1)
    par_lm = MultiverseLM(model, tok)
    seq_lm = MultiverseLM(model, tok, parallel=False)
    prompt = par_lm.encode_prompt(build_prompt(problem, config, tok))
    target = prompt + encode_trace(body, tok, canonical=False) + [tok.eos_token_id]
    par = NativeBackend(None, lm=par_lm, logits_processors=[ScriptedProcessor(target, len(prompt), tok)])
    if seq_body is not None:
        target = prompt + encode_trace(seq_body, tok, canonical=False) + [tok.eos_token_id]
    seq_proc = ScriptedProcessor(target, len(prompt), tok, rules=StructureRules(parallel=False))
    seq = NativeBackend(None, lm=seq_lm, parallel=False, logits_processors=[seq_proc])
    return par, seq


def test_paired_speed_with_forks(tok, tmp_path) -> None:
    problem, config = Problem("q1", "Add the cases.", "12", "word"), EvalConfig(max_new_tokens=300, suffix="")
    par, seq = backends(tok, FORKED, config, problem)
    path = tmp_path / "speed.jsonl"
    result = compare_sequential(par, seq, [("t", problem)], config, rounds=4, out_path=str(path), progress=False,
                                baseline=True)
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [p["first"] for p in pairs] == ["parallel", "sequential", "parallel", "sequential"]  # ABBA
    for p in pairs:
        assert p["parallel"]["forks"] == 1 and p["sequential"]["forks"] == 0
        assert p["parallel"]["critical_path"] < p["sequential"]["critical_path"] == p["sequential"]["generated_tokens"]
        assert p["parallel"]["forced_tokens"] > 0  # sampled in the sequential run, forced in the parallel one
        assert p["parallel"]["generated_tokens"] + p["parallel"]["forced_tokens"] == p["sequential"]["generated_tokens"]
    sp = result["speedup"]
    assert sp["n"] == 4 and sp["min"] <= sp["q25"] <= sp["median"] <= sp["q75"] <= sp["max"]
    ratios = sorted(p["sequential"]["wall_s"] / p["parallel"]["wall_s"] for p in pairs)
    assert sp["median"] == pytest.approx((ratios[1] + ratios[2]) / 2)
    assert result["accuracy"] == {"parallel": 1.0, "sequential": 1.0}
    assert "wall-clock speedup over the baseline (median of paired ratios)" in print_speed(result)


def test_forks_off_is_graded_and_never_called_a_baseline(tok, tmp_path) -> None:
    """Without --baseline-model the sequential side is the model with forks off: its answers are graded (here it
    answers 13), the ratio is not a speedup and the output says so; no "equal work" extrapolation anywhere."""
    problem, config = Problem("q1", "Add the cases.", "12", "word"), EvalConfig(max_new_tokens=300, suffix="")
    par, seq = backends(tok, FORKED, config, problem, seq_body=PLAIN.replace("Answer: 12", "Answer: 13"))
    path = tmp_path / "speed.jsonl"
    result = compare_sequential(par, seq, [("t", problem)], config, rounds=2, out_path=str(path), progress=False,
                                baseline=False)
    assert result["sequential_side"] == "forks_off" and result["speedup"] is None
    assert result["accuracy"] == {"parallel": 1.0, "sequential": 0.0}
    assert [p["sequential"]["predicted"] for p in map(json.loads, path.read_text().splitlines())] == [["13"], ["13"]]
    assert result["forks_off_ratio"]["n"] == 2 and "equal_work_speedup" not in result
    text = print_speed(result)
    assert "NOT a baseline" in text and "not a speedup" in text and "equal work" not in text
    assert "parallel 1.000 correct, forks off 0.000" in text


def test_no_speedup_without_forks(tok, tmp_path) -> None:
    problem, config = Problem("q2", "Add.", "12", "word"), EvalConfig(max_new_tokens=200, suffix="")
    par, seq = backends(tok, PLAIN, config, problem)
    result = compare_sequential(par, seq, [("t", problem)], config, rounds=2, out_path=str(tmp_path / "s.jsonl"),
                                progress=False, baseline=True)
    assert result["pairs_with_forks"] == 0 and result["speedup"] is None and result["wall_ratio"] is None
    text = print_speed(result)
    assert "speedup: none" in text and "x [" not in text


def test_twin_as_sequential_side_with_its_own_prompt_and_batched_chunks(tok, tmp_path) -> None:
    """The sequential side may be another model prompted its own way (the autoregressive twin); questions are
    timed in chunks decoded together, and a pair's counts cover its whole chunk."""
    problems = [("t", Problem(f"q{i}", f"Add case {i}.", "12", "word")) for i in range(3)]
    config = EvalConfig(max_new_tokens=300, suffix=" in parallel")
    twin_config = EvalConfig(max_new_tokens=300, suffix=" in order")
    par, seq = backends(tok, FORKED, config, problems[0][1])
    seen: list[str] = []
    generate_all = seq.generate_all
    seq.generate_all = lambda prompts, decs: (seen.extend(prompts), generate_all(prompts, decs))[1]  # type: ignore[method-assign]
    result = compare_sequential(par, seq, problems, config, rounds=2, out_path=str(tmp_path / "s.jsonl"),
                                progress=False, sequential_config=twin_config, batch_size=2, baseline=True)
    pairs = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [(p["id"], p["questions"], p["round"]) for p in pairs] == [("q0", 2, 0), ("q2", 1, 0), ("q0", 2, 1), ("q2", 1, 1)]
    assert seen and all(str(p).count(" in order") == 1 and " in parallel" not in str(p) for p in seen)
    assert result["batch_size"] == 2 and result["pairs"] == 4
    for p in pairs:
        assert p["parallel"]["wall_per_question_s"] == pytest.approx(p["parallel"]["wall_s"] / p["questions"])
    forked = result["mean_wall_per_question_s_forked"]
    assert forked["ratio"] == pytest.approx(forked["sequential"] / forked["parallel"])
    assert result["speedup_all"]["n"] == 4
    assert "over all pairs" in print_speed(result) and "at batch 2" in print_speed(result)
