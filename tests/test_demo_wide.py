"""The widened remainders task (issue 23): every range reached, the held-out split on every edge (read back from
the questions alone), answers right, the under-parallel rewrite, `reproduce --shape wide`; the default splits
that the shipped model was trained on are unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from multiverse.demo import remainders
from multiverse.demo.reproduce import main
from multiverse.demo.wide import main as wide_main
from multiverse.demo.wide import (EDGES, PER_EDGE, WIDE, under_parallel, wide_distill_rows, wide_held_out_rows,
                                  wide_train_rows)
from multiverse.structure import canonicalize, parse, sequential_twin
from test_demo_remainders import _evaluate


def features(question: str) -> dict[str, int]:
    """What a question shows, read from its text (not from the generator): names, divisor, largest dividend,
    most and fewest subtractions of one remainder, nested names, chain length (0: not a chain)."""
    names = re.findall(r"([A-Z]) = ", question)
    divisor = int(re.findall(r"mod (\d+)", question)[0])
    chain = bool(re.search(r"\([A-Z]\+", question))
    dividends = [int(d) for d in re.findall(r"(\d+) mod", question)]
    if chain:  # a link's dividend is the previous value plus its offset: use the values the answer goes through
        value = dividends[0] % divisor
        for offset in re.findall(r"\([A-Z]\+(\d+)\)", question):
            dividends.append(value + int(offset))
            value = dividends[-1] % divisor
    steps = [d // divisor for d in dividends]
    nested = 0 if chain else len(re.findall(r"[A-Z] = \(", question))
    return {"names": len(names), "divisor": divisor, "dividend": max(dividends), "steps_max": max(steps),
            "steps_min": min(steps), "nested": nested, "chain": len(names) if chain else 0}


# edge -> (feature, value it must reach in some row of that edge)
EDGE_CHECKS = {"names=2": ("names", 2), "names=8": ("names", 8), "divisor=2": ("divisor", 2), "divisor=9": ("divisor", 9),
               "steps=0": ("steps_min", 0), "steps=20": ("steps_max", 20), "dividend>=140": ("dividend", 150),
               "nested=0": ("nested", 0), "nested=2": ("nested", 2), "chain=2": ("chain", 2), "chain=5": ("chain", 5)}


@pytest.fixture(scope="module")
def held() -> list[dict]:
    train = wide_train_rows(400)
    return wide_held_out_rows(600, {r["question"] for r in train})


def test_the_default_splits_are_the_ones_the_shipped_model_was_trained_on() -> None:
    rows = remainders.train_rows(40) + remainders.held_out_rows(20, set()) + remainders.fine_tune_rows(40, set())
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert digest == "028f5fb568214326de9817845051a222060d6b475b78d9eca9a19bcd487231e9"


def test_held_out_split_sits_on_every_edge_of_every_range(held) -> None:
    assert len(held) == 600 and set(EDGE_CHECKS) == set(EDGES)
    for edge, (key, value) in EDGE_CHECKS.items():
        rows = [features(r["question"]) for r in held if r["edge"] == edge]
        assert len(rows) == PER_EDGE
        if key in ("names", "divisor", "nested", "chain"):
            assert all(f[key] == value for f in rows), edge  # every row of the edge is on it
        assert any(f[key] == value for f in rows), edge
    seen = [features(r["question"]) for r in held]
    assert min(f["names"] for f in seen if not f["chain"]) == 2 and max(f["names"] for f in seen) == 8
    assert {f["divisor"] for f in seen} == set(range(2, 10))
    assert max(f["dividend"] for f in seen) <= 150 and max(f["steps_max"] for f in seen) <= 20
    assert {f["chain"] for f in seen} == {0, 2, 3, 4, 5} and {f["nested"] for f in seen} == {0, 1, 2}


def test_wide_rows_are_canonical_true_and_disjoint(held) -> None:
    train = wide_train_rows(400)
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    for row in train[:200] + held:
        trace = row["deepseek_thinking_trajectory_parallel"]
        assert canonicalize(trace) == trace and row["deepseek_thinking_trajectory"] == sequential_twin(trace)
        assert int(row["deepseek_attempt"]) == _evaluate(row["question"])
        f = features(row["question"])
        assert WIDE.divisor[0] <= f["divisor"] <= WIDE.divisor[1] and f["dividend"] <= WIDE.dividend[1]
        if not row["dependent"]:
            assert len(next(parse(trace).blocks()).paths) == f["names"]


def test_distillation_pool_covers_every_edge_and_avoids_the_held_out_split(held) -> None:
    held_questions = {r["question"] for r in held}
    rows = wide_distill_rows(440, held_questions, edge_share=0.5)
    assert len({r["question"] for r in rows}) == 440 and not {r["question"] for r in rows} & held_questions
    on_edges = [r for r in rows if r["edge"]]
    assert 0.4 < len(on_edges) / len(rows) < 0.6 and {r["edge"] for r in on_edges} == set(EDGES)
    for r in on_edges:  # each row really sits on its edge, read back from its question
        key, value = EDGE_CHECKS[r["edge"]]
        if key in ("names", "divisor", "nested", "chain"):
            assert features(r["question"])[key] == value, r["edge"]
        assert int(r["deepseek_attempt"]) == _evaluate(r["question"])
    assert wide_distill_rows(50, held_questions) == wide_distill_rows(50, held_questions)  # seeded
    assert not any(r["edge"] for r in wide_distill_rows(50, set(), edge_share=0.0))
    with pytest.raises(ValueError, match="edge_share"):
        wide_distill_rows(1, set(), edge_share=1.5)


def test_under_parallel_keeps_a_share_of_the_forkable_blocks() -> None:
    rows = wide_train_rows(200)
    out = under_parallel(rows, 0.25, seed=3)
    forkable = [r for r in out if not r["dependent"]]
    kept = [r for r in forkable if r["written_parallel"]]
    assert len(kept) == round(0.25 * len(forkable))
    for before, after in zip(rows, out):
        trace = after["deepseek_thinking_trajectory_parallel"]
        if after["written_parallel"]:
            assert trace == before["deepseek_thinking_trajectory_parallel"] and "<Parallel>" in trace
        else:  # sequential: exactly the twin (the answer and the twin column are untouched)
            assert trace == before["deepseek_thinking_trajectory"] and "<" not in trace
        assert after["deepseek_attempt"] == before["deepseek_attempt"]
    assert under_parallel(rows, 0.25, seed=3) == out
    with pytest.raises(ValueError, match="share"):
        under_parallel(rows, 1.5)


def test_reproduce_prepares_the_wide_under_parallel_start(tmp_path) -> None:
    out = str(tmp_path / "wide")
    main(["--out", out, "--shape", "wide", "--parallel-share", "0.25", "--rows", "40", "--held-out", "300",
          "--hidden", "32", "--layers", "1", "--prepare-only"])
    read = lambda name: [json.loads(x) for x in open(os.path.join(out, name), encoding="utf-8")]  # noqa: E731
    held, tune = read("heldout.jsonl"), read("finetune.jsonl")
    assert len(held) == 300 and {r["edge"] for r in held} == set(EDGES) | {""}
    assert any(r["written_parallel"] for r in tune) and any(not r["written_parallel"] and not r["dependent"] for r in tune)
    with pytest.raises(ValueError, match="edges"):
        wide_held_out_rows(100, set())
    wide_main(["--out", out, "--rows", "30"])  # the distillation pool beside them: no held-out or fine-tune question
    pool = read("distill_pool.jsonl")
    assert len(pool) == 30 and not {r["question"] for r in pool} & {r["question"] for r in held + tune}


def test_the_learning_chain_commands_use_real_flags_and_configs(tmp_path) -> None:
    import argparse
    import shlex

    from multiverse.demo.learn_chain import stage_commands
    from multiverse.evaluation.cli import add_arguments as eval_arguments
    from training.cli import add_arguments as train_arguments, overrides
    from training.distill.config import load_distill_config
    from training.rl.config import load_rl_config

    stages = stage_commands(str(tmp_path / "wide"), rounds=2, rl_steps=40)
    assert list(stages) == ["start", "full", "distill", "rl", "no_bonus", "eval"]
    from multiverse.cli import add_common_arguments

    train, ev = argparse.ArgumentParser(), argparse.ArgumentParser()
    train_arguments(train)
    eval_arguments(ev)
    for parser in (train, ev):
        add_common_arguments(parser)  # --threads, --debug: every subcommand has them
    for name in ("distill", "rl", "no_bonus"):
        args = train.parse_args(shlex.split(stages[name][0])[2:])
        load = load_distill_config if args.stage == "distill" else load_rl_config
        cfg = load(args.config, overrides(args))  # the shipped config with the chain's overrides is valid
        assert cfg.data.tasks == str(tmp_path / "wide" / "finetune.jsonl")
        if name == "distill":  # two sampling processes, then the fine-tune on both cores
            assert cfg.distill.workers == 2 and args.threads == 2
    no_bonus = load_rl_config(*(lambda a: (a.config, overrides(a)))(train.parse_args(shlex.split(stages["no_bonus"][0])[2:])))
    assert no_bonus.reward.acceleration == 0 and no_bonus.train.max_steps == 10
    assert no_bonus.model.name_or_path == str(tmp_path / "wide" / "rl")
    assert "multiverse.demo.chain_report" in stages["eval"][-1]
    full = shlex.split(stages["full"][0])  # the fully parallel model shares the start's base: no second base run
    assert full[full.index("--base") + 1] == str(tmp_path / "wide" / "base") and full[full.index("--only") + 1] == "multiverse"
    for command in stages["eval"][:-1]:
        args = ev.parse_args(shlex.split(command)[2:])
        assert args.tasks == str(tmp_path / "wide" / "heldout.jsonl") and args.temperature == 0


def test_chain_report_joins_records_to_held_out_rows(tmp_path) -> None:
    """The chain's figures come from eval records joined to their held-out rows by line: forked fraction among
    forkable rows only, accuracy per edge and per name count; a record of another file is refused."""
    from multiverse.demo.chain_report import report, table

    rows = [{"question": "Let A = 8 mod 3, B = 7 mod 2. Compute A+B.", "dependent": False, "edge": "names=2"},
            {"question": "Let A = 9 mod 4, B = (A+3) mod 4. Compute B.", "dependent": True, "edge": ""},
            {"question": "Let A = 5 mod 2, B = 6 mod 4, C = 7 mod 5. Compute A+B+C.", "dependent": False, "edge": ""}]
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [(1, True, 1, 2.0, 40), (2, False, 0, 1.0, 90), (3, True, 0, 1.0, 80)]
    for stage in ("start", "rl", "twin"):  # the twin, evaluated on its own, is read from eval/twin
        (tmp_path / "eval" / stage).mkdir(parents=True)
        (tmp_path / "eval" / stage / "records.jsonl").write_text("".join(json.dumps(
            {"id": str(i), "prompt": [{"role": "user", "content": rows[i - 1]["question"]}], "correct": ok, "forks": forks,
             "degree_of_parallelism": par, "critical_path": cp}) + "\n" for i, ok, forks, par, cp in records))
    result = report(str(tmp_path))
    start = result["start"]
    assert start["rows"] == 3 and start["accuracy"]["mean"] == pytest.approx(2 / 3)
    assert start["forked_forkable"]["mean"] == 0.5 and start["forked_forkable"]["n"] == 2  # the chain row is not forkable
    assert start["names2"]["mean"] == 0.5 and start["names3"]["mean"] == 1.0 and start["edges"] == {"names=2": 1.0}
    assert start["parallelism"] == pytest.approx(4 / 3) and "| rl | 3 |" in table(result)
    assert list(result) == ["start", "rl", "twin"] and result["twin"] == start
    (tmp_path / "eval" / "rl" / "records.jsonl").write_text(json.dumps(
        {"id": "2", "prompt": [{"role": "user", "content": "another question"}], "correct": True}) + "\n")
    with pytest.raises(ValueError, match="records.jsonl:1: id 2 is not that line"):
        report(str(tmp_path))


def test_reproduce_refuses_a_base_that_is_no_model(tmp_path) -> None:
    out = str(tmp_path / "wide")
    with pytest.raises(SystemExit):
        main(["--out", out, "--shape", "wide", "--rows", "40", "--held-out", "300", "--hidden", "32", "--layers", "1",
              "--only", "multiverse", "--base", str(tmp_path / "nothing")])
