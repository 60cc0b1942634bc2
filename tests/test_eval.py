"""Evaluation harness: task loading, answer extraction and math-equivalence grading, and a CLI run end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from multiverse.evaluation import Problem, extract_answer, extract_choice, is_correct, load_task

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.mark.parametrize("task,count", [("aime24", 30), ("aime25", 30), ("math500", 500), ("gsm8k_sample", 200)])
def test_local_tasks_load(task: str, count: int) -> None:
    problems = load_task(task, data_dir=DATA)
    assert len(problems) == count
    assert all(p.question and p.answer for p in problems)
    assert len(load_task(task, data_dir=DATA, limit=3)) == 3


def test_missing_fields_name_the_row(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(ValueError, match="row 1"):
        load_task("aime24", path=str(bad))


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


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{{2}+3}", "{2}+3"),
        ("...\n\nAnswer: 42.\n", "42"),
        ("we get 3 and then 17", "17"),
        ("nothing here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "gold,output,correct",
    [
        ("70", "Answer: \\boxed{70}", True),
        ("70", "Answer: \\boxed{71}", False),
        ("\\frac{1}{2}", "\\boxed{0.5}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "The point is \\boxed{(3, \\pi/2)}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi)}", False),
        ("204", "no answer at all", False),
    ],
)
def test_math_equivalence(gold: str, output: str, correct: bool) -> None:
    assert is_correct(Problem("p", "q", gold, "math"), output)[0] is correct


def test_extract_choice() -> None:
    assert extract_choice("Answer: (C) because") == "C"
    assert extract_choice("I pick (B) over (A), finally (D)") == "D"
    assert extract_choice("no letter") is None


def test_cli_runs_end_to_end(tok, tmp_path) -> None:
    from multiverse.tiny import build_model

    model_dir = tmp_path / "tiny"
    build_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "multiverse.cli", "eval", "--model", str(model_dir), "--tasks", "aime25,math500",
           "--data-dir", DATA, "--limit", "2", "--max-new-tokens", "12", "--temperature", "1.0", "--batch-size", "2",
           "--compare-sequential", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["aime25", "aime25", "math500", "math500"]
    assert all(1 <= r["generated_tokens"] <= 12 and r["critical_path"] >= 1 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"aime25", "math500", "all"}
    assert summary["all"]["speedup"] > 0 and 0.0 <= summary["all"]["accuracy"] <= 1.0
    assert (out / "parallelism.png").stat().st_size > 1000
    assert "multiverse eval" in proc.stdout
