"""The reproduction task (issue 13): traces canonical and faithful, every step true, answers right, splits disjoint
and seeded; its tokenizer; the data step of `python -m multiverse.demo.reproduce` writes rows `multiverse eval`
loads, and the printed eval commands parse. Nothing is trained."""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex

from multiverse.demo.remainders import (
    FINE_TUNE, HELD_OUT, TRAIN, dependent, fine_tune_rows, held_out_rows, independent, make_rows, sample_problem, subtractions,
)
from multiverse.demo.reproduce import HELD_OUT_FIELDS, eval_commands, main
from multiverse.structure import canonicalize, parse, sequential_twin


def test_rows_are_canonical_and_their_twin_is_the_sequential_twin() -> None:
    for row in make_rows(300, seed=5, shape=HELD_OUT):
        trace = row["deepseek_thinking_trajectory_parallel"]
        assert canonicalize(trace) == trace
        assert row["deepseek_thinking_trajectory"] == sequential_twin(trace)
        assert "<" not in row["deepseek_thinking_trajectory"]


def test_independent_problems_fork_one_path_per_name_and_chains_do_not() -> None:
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


def test_a_problem_has_one_divisor_and_chains_add_round_offsets() -> None:
    rng = random.Random(4)
    for _ in range(300):
        p = sample_problem(rng, HELD_OUT)
        assert len(set(re.findall(r"mod (\d+)", p.question))) == 1
        assert all(int(o) % 10 == 0 for o in re.findall(r"\([A-Z]\+(\d+)\)", p.question))
        assert all(int(d) <= 99 for d in re.findall(r"(\d+) mod", p.question))  # two digits at most, any divisor


def _evaluate(question: str) -> int:
    """The value the question asks for, from its definitions alone (independent of the trace builder)."""
    defs, target = re.match(r"Let (.*)\. Compute (.*)\.$", question).groups()  # type: ignore[union-attr]
    env: dict[str, int] = {}
    for name, expr in re.findall(r"([A-Z]) = ((?:\([^)]*\)|[^,(])+)", defs):
        env[name] = eval(expr.replace("mod", "%"), {}, dict(env))  # numbers, mod, +, brackets, earlier names
    return eval(target, {}, env)


def test_answers_are_right_and_every_step_is_true() -> None:
    for row in make_rows(300, seed=9, shape=HELD_OUT):
        assert int(row["deepseek_attempt"]) == _evaluate(row["question"])
        twin = row["deepseek_thinking_trajectory"]
        for chain in re.findall(r"\d+(?:-\d+=\d+)+", twin):
            value, *steps = chain.split("-")
            divisor = None
            for step in steps:  # "d=v": the previous value less the divisor, which never changes
                d, v = step.split("=")
                assert divisor in (None, d) and int(value) - int(d) == int(v) >= 0
                divisor, value = d, v
            assert int(value) < int(divisor)  # stops at the remainder
        total = re.search(r"Total: (.*)\.$", twin)
        if total:  # 'A=8 B=5:13 C=3:16': each name's value as its path found it, then the running sum
            values = dict(re.findall(r"so ([A-Z])=(\d+)\.", twin))
            running = 0
            for name, value, shown in re.findall(r"([A-Z])=(\d+)(?::(\d+))?", total.group(1)):
                running += int(value)
                assert values[name] == value and int(shown or value) == running
            assert running == int(row["deepseek_attempt"])


def test_traces_spell_the_computation() -> None:
    assert subtractions(14, 4) == ("14-4=10-4=6-4=2", 2)
    assert subtractions(3, 5) == ("3", 3)
    p = independent([((14, 4),), ((7, 3), (9, 5))])
    assert p.question == "Let A = 14 mod 4, B = (7 mod 3)+(9 mod 5). Compute A+B." and p.answer == 7
    assert sequential_twin(p.trace) == (
        "A = 14 mod 4: 14-4=10-4=6-4=2, so A=2.\nB = (7 mod 3)+(9 mod 5): 7 mod 3: 7-3=4-3=1, so 1.\n"
        "9 mod 5: 9-5=4, so 4. 1+4=5, so B=5.\nTotal: A=2 B=5:7."
    )
    (block, inner) = parse(p.trace).blocks()  # an outline per name, one per bracketed remainder
    assert [o.text.strip() for o in block.goal.outlines] == ["A", "B"]
    assert [o.text.strip() for o in inner.goal.outlines] == ["7 mod 3", "9 mod 5"]
    q = dependent((14, 4), [(20, 3)])
    assert q.question == "Let A = 14 mod 4, B = (A+20) mod 3. Compute B." and q.answer == 1
    assert q.trace == "A = 14 mod 4: 14-4=10-4=6-4=2, so A=2.\nB = (2+20) mod 3 = 22 mod 3: " + subtractions(22, 3)[0] + ", so B=1."


def test_splits_are_disjoint_seeded_and_held_out_reaches_past_training_sizes() -> None:
    train = make_rows(400, seed=0)
    held = make_rows(200, seed=1, shape=HELD_OUT, exclude={r["question"] for r in train})
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    assert make_rows(50, seed=0) == train[:50]
    assert held_out_rows(20, {r["question"] for r in train}) == held[:20]  # the eval task `remainders` is this split's prefix
    def longest_path(rows: list[dict]) -> int:  # subtractions in the longest chain of any row
        return max(c.count("-") for r in rows for c in re.findall(r"\d+(?:-\d+=\d+)+", r["deepseek_thinking_trajectory"]))

    assert longest_path(train) <= TRAIN.steps[1] < longest_path(held) <= HELD_OUT.steps[1]


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


def _read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_prepare_only_writes_rows_that_eval_loads(tmp_path) -> None:
    from multiverse.evaluation.cli import add_arguments, resolve_settings
    from multiverse.evaluation.tasks import load_file, parse_fields

    out = str(tmp_path / "repro")
    main(["--out", out, "--rows", "30", "--held-out", "12", "--hidden", "32", "--layers", "1", "--prepare-only"])
    assert not os.path.exists(os.path.join(out, "multiverse"))  # nothing trained
    train, fine_tune = (_read(os.path.join(out, f)) for f in ("train.jsonl", "finetune.jsonl"))
    problems = load_file(os.path.join(out, "heldout.jsonl"), parse_fields(HELD_OUT_FIELDS))
    assert len(train) == len(fine_tune) == 30 and len(problems) == 12
    assert not ({r["question"] for r in train} | {r["question"] for r in fine_tune}) & {p.question for p in problems}
    assert {r["question"] for r in fine_tune} != {r["question"] for r in train}  # a fresh draw
    assert all(int(p.answer) == _evaluate(p.question) for p in problems)
    assert os.path.isfile(os.path.join(out, "init", "config.json"))
    assert os.path.isfile(os.path.join(out, "init", "tokenizer.json"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name in ("multiverse", "autoregressive"):  # stand-ins for the trained models: eval checks the paths
        os.makedirs(os.path.join(out, name))
        open(os.path.join(out, name, "config.json"), "w").close()
    commands = eval_commands(out)
    assert len(commands) == 4
    for command in commands:  # the printed commands use flags `multiverse eval` has, and its checks pass
        args = parser.parse_args(shlex.split(command)[2:])
        assert args.tasks == os.path.join(out, "heldout.jsonl") and args.suffix == "" and args.baseline_suffix == ""
        settings = resolve_settings(args)
        assert settings["baseline_model"] == os.path.join(out, "autoregressive")


def test_both_models_are_fine_tuned_from_one_base_trained_on_the_twins() -> None:
    from multiverse.demo.reproduce import train_command

    def flag(cmd: list[str], key: str) -> str:
        return next(cmd[i + 1].split("=", 1)[1] for i, a in enumerate(cmd) if a == "--set" and cmd[i + 1].startswith(key))

    base, mv, ar = (train_command(name, "out", None, 1) for name in ("base", "multiverse", "autoregressive"))
    assert flag(base, "model.name_or_path") == os.path.join("out", "init") and "--autoregressive-baseline" in base
    assert flag(mv, "model.name_or_path") == flag(ar, "model.name_or_path") == os.path.join("out", "base")
    assert "--autoregressive-baseline" not in mv and "--autoregressive-baseline" in ar
    assert {flag(c, "train.output_dir") for c in (base, mv, ar)} == {os.path.join("out", n) for n in ("base", "multiverse", "autoregressive")}
    assert flag(base, "data.multiverse") == os.path.join("out", "train.jsonl")
    assert flag(mv, "data.multiverse") == flag(ar, "data.multiverse") == os.path.join("out", "finetune.jsonl")
    assert train_command("multiverse", "out", 7, 1)[-2:] == ["--max-steps", "7"]
    shared = train_command("multiverse", "full", None, 1, base=os.path.join("out", "base"))  # --base: another run's base
    assert flag(shared, "model.name_or_path") == os.path.join("out", "base")
    assert flag(shared, "data.multiverse") == os.path.join("full", "finetune.jsonl")
    assert flag(train_command("base", "full", None, 1, base="elsewhere"), "model.name_or_path") == os.path.join("full", "init")


def test_fine_tune_rows_nest_half_the_independent_problems_and_skip_excluded_questions() -> None:
    drawn = fine_tune_rows(400, set())
    independent = [r for r in drawn if not r["dependent"]]
    share = sum("(" in r["question"] for r in independent) / len(independent)
    assert abs(share - FINE_TUNE.nested_share) < 0.08 and FINE_TUNE.nested_share > TRAIN.nested_share
    excluded = {r["question"] for r in drawn[:10]}
    fine = fine_tune_rows(400, excluded)
    assert len(fine) == 400 and not {r["question"] for r in fine} & excluded
