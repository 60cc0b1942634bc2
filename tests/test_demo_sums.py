"""The reproduction task (issue 13): traces canonical and faithful, answers right, splits disjoint; its tokenizer;
the data step of `python -m multiverse.demo.reproduce` writes rows `multiverse eval` can load. Nothing is trained."""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex

from multiverse.demo.reproduce import HELD_OUT_FIELDS, eval_commands, main
from multiverse.demo.sums import HELD_OUT, TRAIN, dependent, independent, make_rows, running_sum, sample_problem
from multiverse.structure import canonicalize, parse, sequential_twin


def test_rows_are_canonical_and_their_twin_is_the_sequential_twin() -> None:
    for row in make_rows(300, seed=5, shape=HELD_OUT):
        trace = row["deepseek_thinking_trajectory_parallel"]
        assert canonicalize(trace) == trace
        assert row["deepseek_thinking_trajectory"] == sequential_twin(trace)
        assert "<" not in row["deepseek_thinking_trajectory"]


def test_independent_problems_fork_one_path_per_group_and_chains_do_not() -> None:
    rng = random.Random(3)
    kinds = set()
    for _ in range(300):
        p = sample_problem(rng, TRAIN)
        names = re.findall(r"([A-Z]) = ", p.question)
        blocks = list(parse(p.trace).blocks())  # every block, nested ones included
        if p.dependent:
            assert blocks == [] and p.question.endswith(f"Compute {names[-1]}.")
            kinds.add("dependent")
        else:
            block, *inner = blocks
            assert len(block.paths) == len(names) and p.question.endswith(f"Compute {'+'.join(names)}.")
            assert len(inner) == p.question.count("(") // 2
            kinds.add("nested" if inner else "flat")
    assert kinds == {"dependent", "nested", "flat"}


def _evaluate(question: str) -> int:
    """The value the question asks for, from its definitions alone (independent of the trace builder)."""
    defs, target = re.match(r"Let (.*)\. Compute (.*)\.$", question).groups()  # type: ignore[union-attr]
    env: dict[str, int] = {}
    for name, expr in re.findall(r"([A-Z]) = ([^,]+)", defs):
        env[name] = eval(expr, {}, dict(env))  # digits, +, brackets and earlier names only
    return eval(target, {}, env)


def test_answers_are_right_and_every_step_is_true() -> None:
    for row in make_rows(300, seed=9, shape=HELD_OUT):
        assert int(row["deepseek_attempt"]) == _evaluate(row["question"])
        for chain in re.findall(r"\d+(?:\+\d+=\d+)+", row["deepseek_thinking_trajectory"]):
            total, *steps = chain.split("+")
            for step in steps:  # "d=t": the running total plus the digit
                d, t = step.split("=")
                assert int(total) + int(d) == int(t)
                total = t


def test_traces_spell_the_computation() -> None:
    assert running_sum((5, 2, 8)) == ("5+2=7+8=15", 15)
    assert running_sum((3, 1), start=15) == ("15+3=18+1=19", 19)
    p = independent([((1, 2),), ((3, 4), (5, 6))])
    assert p.question == "Let A = 1+2, B = (3+4) + (5+6). Compute A+B." and p.answer == 21
    assert sequential_twin(p.trace) == "A: 1+2=3, so A=3.\nB: 3+4=7, so 7.\n5+6=11, so 11. 7+11=18, so B=18.\nTotal: 3+18=21."
    q = dependent([(1, 2), (3,)])
    assert q.question == "Let A = 1+2, B = A+3. Compute B." and q.trace == "A: 1+2=3, so A=3.\nB: 3+3=6, so B=6."


def test_splits_are_disjoint_seeded_and_held_out_reaches_past_training_sizes() -> None:
    train = make_rows(400, seed=0)
    held = make_rows(200, seed=1, shape=HELD_OUT, exclude={r["question"] for r in train})
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    assert make_rows(50, seed=0) == train[:50]
    groups = [len(re.findall(r"[A-Z] = ", r["question"])) for r in held if not r["dependent"]]
    assert max(groups) > TRAIN.groups[1]
    links = [len(re.findall(r"[A-Z] = ", r["question"])) for r in held if r["dependent"]]
    assert max(links) > TRAIN.chain[1]


def test_tokenizer_keeps_digits_and_tags_whole() -> None:
    from multiverse.demo.tokenizer import task_tokenizer
    from multiverse.tags import TAGS

    rows = make_rows(60, seed=2)
    tok = task_tokenizer([t for r in rows for t in (r["question"], r["deepseek_thinking_trajectory"])])
    trace = rows[0]["deepseek_thinking_trajectory_parallel"]
    assert tok.decode(tok.encode(trace)) == trace
    for number in ("45", "907", "1234"):
        assert tok.tokenize(number) == list(number)  # one token per digit
    for tag in TAGS:
        assert len(tok.encode(tag)) == 1


def test_prepare_only_writes_rows_that_eval_loads(tmp_path) -> None:
    from multiverse.evaluation.cli import add_arguments
    from multiverse.evaluation.tasks import load_file, parse_fields

    out = str(tmp_path / "repro")
    main(["--out", out, "--rows", "30", "--held-out", "12", "--hidden", "32", "--layers", "1", "--prepare-only"])
    assert not os.path.exists(os.path.join(out, "multiverse"))  # nothing trained
    with open(os.path.join(out, "train.jsonl"), encoding="utf-8") as f:
        train = [json.loads(line) for line in f]
    problems = load_file(os.path.join(out, "heldout.jsonl"), parse_fields(HELD_OUT_FIELDS))
    assert len(train) == 30 and len(problems) == 12
    assert not {r["question"] for r in train} & {p.question for p in problems}
    assert all(int(p.answer) == _evaluate(p.question) for p in problems)
    assert os.path.isfile(os.path.join(out, "init", "config.json"))
    assert os.path.isfile(os.path.join(out, "init", "tokenizer.json"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for command in eval_commands(out):  # the printed commands use flags main's `multiverse eval` has
        args = parser.parse_args(shlex.split(command)[2:])
        assert args.tasks == os.path.join(out, "heldout.jsonl") and args.suffix == ""
