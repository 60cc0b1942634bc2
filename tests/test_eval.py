"""Evaluation harness: task loading (named, local files with a field map), input errors, a CLI run end to end."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from multiverse.errors import UsageError
from multiverse.data import DATA_DIR
from multiverse.evaluation import Problem, is_correct, load_file, load_task
from multiverse.evaluation.cli import add_arguments, resolve_settings
from multiverse.evaluation.protocol import PARALLEL_SUFFIX, resolve
from multiverse.evaluation.tasks import parse_fields

DATA = str(DATA_DIR)  # the copies shipped in the package


@pytest.mark.parametrize("task,count", [("aime24", 30), ("aime25", 30), ("math500", 500), ("gsm8k_sample", 200)])
def test_local_tasks_load(task: str, count: int) -> None:
    problems = load_task(task)  # no --data-dir: the package's copy, no hub (HF_HUB_OFFLINE=1)
    assert len(problems) == count
    assert all(p.question and p.answer for p in problems)
    assert load_task(task, data_dir=DATA, limit=3) == problems[:3]
    assert {p.kind for p in problems} == {"word" if task == "gsm8k_sample" else "math"}


def test_remainders_task_is_reproducible() -> None:
    a, b = load_task("remainders", limit=5), load_task("remainders", limit=5)
    assert a == b and len({p.question for p in a}) == 5 and all(p.suffix == "" for p in a)
    assert load_task("remainders", limit=3) == a[:3]


def test_missing_fields_name_the_row(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(UsageError, match="row 1"):
        load_task("aime24", path=str(bad))


def test_task_file_with_field_map(tmp_path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "What is 2+2?", "a": "4", "uid": "x1"}) + "\n\n" + json.dumps({"q": "3+3?", "a": "6"}) + "\n")
    fields = parse_fields("question=q,answer=a,id=uid")
    problems = load_file(str(path), fields, "word")
    assert [(p.id, p.answer, p.kind) for p in problems] == [("x1", "4", "word"), ("3", "6", "word")]  # id: the line
    path.write_text(json.dumps({"q": "ok", "a": "1"}) + "\n" + json.dumps({"q": "no answer"}) + "\n")
    with pytest.raises(UsageError, match=r"mine.jsonl:2: field 'a' \(answer\)"):
        load_file(str(path), fields)
    path.write_text("{not json\n")
    with pytest.raises(UsageError, match="mine.jsonl:1: not JSON"):
        load_file(str(path), fields)
    for bad in ("question", "quest=q", "answer="):
        with pytest.raises(UsageError, match="--field"):
            parse_fields(bad)


def test_gpqa_choices_are_shuffled_reproducibly(tmp_path) -> None:
    rows = [
        {"Record ID": f"r{i}", "Question": f"Which is right {i}?", "Correct Answer": "right",
         "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}
        for i in range(8)
    ]
    path = tmp_path / "gpqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, again = load_task("gpqa_diamond", path=str(path)), load_task("gpqa_diamond", path=str(path))
    assert [p.answer for p in first] == [p.answer for p in again]
    assert len({p.answer for p in first}) > 1  # the gold letter moves
    for p in first:
        assert f"({p.answer}) right" in p.question
        assert is_correct(p, f"so the answer is \\boxed{{{p.answer}}}")[0]
        wrong = "A" if p.answer != "A" else "B"
        assert not is_correct(p, f"Answer: ({wrong})")[0]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--tasks", "aime26"], "--tasks: unknown 'aime26'"),
        (["--tasks", "missing.jsonl"], "--tasks missing.jsonl: no such file"),
        (["--field", "question=q,answer=a"], "--field applies to task files"),
        (["--model", "no/such/model/dir"], "--model no/such/model/dir: no such directory"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--compare-sequential", "--backend", "openai", "--url", "http://x/v1"], "--compare-sequential needs"),
        (["--request-extra", "{bad"], "--request-extra: not JSON"),
        (["--limit", "0"], "--limit 0"),
    ],
)
def test_bad_input_is_refused_before_any_work(argv, needle) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        resolve_settings(_args(*argv))


def test_paper_preset_and_flags_over_it() -> None:
    paper = resolve("paper", {})
    assert (paper.samples, paper.temperature, paper.top_p, paper.suffix) == (16, 0.6, 0.95, PARALLEL_SUFFIX)
    assert paper.max_critical_tokens == 32768 and paper.max_new_tokens >= paper.max_critical_tokens
    mine = resolve("paper", {"samples": 4, "max_critical_tokens": 1000, "temperature": None})
    assert (mine.samples, mine.temperature, mine.max_critical_tokens, mine.max_new_tokens) == (4, 0.6, 1000, 4000)
    assert resolve_settings(_args("--preset", "paper"))["protocol"]["samples"] == 16


@pytest.mark.slow
def test_cli_runs_end_to_end(tok, tmp_path) -> None:
    from multiverse.tiny import build_model

    model_dir = tmp_path / "tiny"
    build_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "multiverse.cli", "eval", "--model", str(model_dir), "--tasks", "aime25,math500",
           "--limit", "2", "--samples", "2", "--max-new-tokens", "12", "--temperature", "1.0",
           "--batch-size", "3", "--compare-sequential", "--speed-questions", "1", "--out", str(out), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted((r["task"], r["sample"]) for r in records) == sorted([("aime25", s) for s in (0, 1)] * 2 + [("math500", s) for s in (0, 1)] * 2)
    assert all(1 <= r["generated_tokens"] <= 12 and r["critical_path"] >= 1 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tasks"]) == {"aime25", "math500", "all"}
    acc = summary["tasks"]["all"]["avg@2"]
    assert 0.0 <= acc["mean"] <= 1.0 and acc["n"] == 4 and "pass@2" in summary["tasks"]["all"]
    assert summary["speed"]["pairs"] == 2
    assert "multiverse eval" in proc.stdout and "speed:" in proc.stdout
    assert "no ratio is reported" in proc.stdout or "[quartiles" in proc.stdout  # printed whole, brackets included
    assert "NOT a baseline" in proc.stdout and summary["speed"]["speedup"] is None  # no --baseline-model: forks off


def test_sglang_backend_is_passed_through_to_multiverse_lm(tmp_path) -> None:
    from multiverse.errors import CommandError
    from multiverse.evaluation.cli import prepare_out
    from multiverse.evaluation.session import Session

    args = _args("--backend", "sglang", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "s"), "--no-progress")
    settings = resolve_settings(args)
    with pytest.raises(CommandError, match="--backend sglang"):  # unavailable here, or no server at that URL
        Session(settings, prepare_out(args, settings), progress=False).run()
