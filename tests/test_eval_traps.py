"""The evaluation's traps, each closed: the baseline's prompt, resume settings, Wilson intervals, the context
length, offline hub tasks, provenance, system prompts and the template as applied, continuous batching in the
engine, and a degree of parallelism that never reads below 1."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

import pytest

from multiverse.demo import BASELINE_MODEL, DEFAULT_MODEL
from multiverse.errors import UsageError
from multiverse.evaluation import Problem, load_task
from multiverse.evaluation.cli import add_arguments, prepare_out, resolve_settings, run
from multiverse.evaluation.protocol import SEQUENTIAL_SUFFIX, EvalConfig
from multiverse.evaluation.report import summary
from multiverse.evaluation.runner import build_prompt

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _baseline_prompt(problem: Problem, *argv: str):
    from multiverse.evaluation.session import Session
    from multiverse.tokens import load_tagged_tokenizer

    settings = resolve_settings(_args("--baseline-model", str(BASELINE_MODEL), *argv))
    config = Session(settings, "unused", progress=False).baseline_config()
    return build_prompt(problem, config, load_tagged_tokenizer(str(BASELINE_MODEL)))[-1]["content"]


def test_baseline_gets_the_tasks_own_suffix() -> None:
    """The twin was trained on bare questions: by default it gets the task's suffix (none for remainders), not
    "Think step by step before answering." (0.583 with that suffix, 1.000 without, on 12 questions)."""
    bare = load_task("remainders", limit=1)[0]
    assert _baseline_prompt(bare) == bare.question
    assert _baseline_prompt(bare, "--preset", "paper") == bare.question
    competition = Problem("1", "Find x.", "3", "math")  # a task with no suffix of its own
    assert _baseline_prompt(competition) == f"Find x. {SEQUENTIAL_SUFFIX}"
    assert _baseline_prompt(competition, "--suffix", "Be brief.") == "Find x. Be brief."
    assert _baseline_prompt(bare, "--baseline-suffix", "Go.") == f"{bare.question} Go."


def test_resume_ignores_settings_that_change_no_result(tmp_path) -> None:
    out = str(tmp_path / "run")
    first = _args("--backend", "openai", "--url", "http://127.0.0.1:8000/v1", "--concurrency", "4", "--out", out)
    prepare_out(first, resolve_settings(first))
    moved = _args("--backend", "openai", "--url", "http://127.0.0.1:8123/v1", "--concurrency", "32",
                  "--batch-size", "3", "--max-retries", "9", "--resume", out)
    assert prepare_out(moved, resolve_settings(moved)) == out  # a server that moved port, more requests in flight
    hotter = _args("--backend", "openai", "--url", "http://127.0.0.1:8000/v1", "--temperature", "0.7", "--resume", out)
    with pytest.raises(UsageError, match="protocol"):
        prepare_out(hotter, resolve_settings(hotter))


def _rows(outcomes: list[list[int]]) -> list[dict]:
    base = {"task": "t", "kind": "math", "gold": "1", "finish_reason": "stop", "method": "boxed", "generated_tokens": 5,
            "forced_tokens": 0, "critical_path": 5, "degree_of_parallelism": 1.0, "forks": 0, "valid": True, "truncated": False}
    return [{**base, "id": str(q), "sample": s, "correct": bool(c), "predicted": "1" if c else "2"} for q, cs in enumerate(outcomes) for s, c in enumerate(cs)]


def test_intervals_are_wilson_inside_0_1_and_never_zero_width() -> None:
    all_right = summary(_rows([[1]] * 12), 1)["avg@1"]
    low, high = all_right["ci95"]
    assert high == 1.0 and 0.70 < low < 0.80  # 12/12: Wilson [0.757, 1], not [1, 1]
    none_right = summary(_rows([[0]] * 12), 1)["avg@1"]["ci95"]
    assert none_right[0] == 0.0 and 0.2 < none_right[1] < 0.3
    three_of_four = summary(_rows([[1], [1], [1], [0]]), 1)["avg@1"]["ci95"]  # normal: 0.75 ± 0.49, past 1
    assert 0.0 <= three_of_four[0] < 0.75 < three_of_four[1] <= 1.0
    k4 = summary(_rows([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]), 4)
    for key in ("avg@4", "pass@4", "cons@4", "valid", "forked", "truncated"):
        lo, hi = k4[key]["ci95"]
        assert 0.0 <= lo <= k4[key]["mean"] <= hi <= 1.0 and hi > lo and k4[key]["interval"] == "wilson", key


def test_degree_of_parallelism_is_at_least_one_on_truncated_text() -> None:
    from multiverse.evaluation.analysis import counts_from_text
    from multiverse.tokens import load_tagged_tokenizer

    tok = load_tagged_tokenizer(str(DEFAULT_MODEL))
    cut = "<Parallel><Goal><Outline>1:</Outline><Outline>2:</Outline><Outline>3:</Outline></Goal><Path>1:"
    counts = counts_from_text(cut, tok)
    assert counts.generated < counts.critical_path  # forced labels sit on the critical path
    assert counts.degree_of_parallelism == 1.0


def test_offline_hub_task_fails_clearly_before_anything_is_written(tmp_path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf"), "PYTHONPATH": ROOT,
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None), env.pop("HF_DATASETS_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "multiverse.cli", "eval", "--tasks", "gpqa_diamond", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--tasks gpqa_diamond" in proc.stderr and "Idavidrein/gpqa" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert "Loading weights" not in proc.stderr  # refused before any model loads


@pytest.fixture(scope="module")
def native_run(tmp_path_factory):
    """A task file of 3 remainders questions, a system prompt, and the paper's critical budget on a 4,096 model."""
    tmp = tmp_path_factory.mktemp("native")
    task = tmp / "rem.jsonl"
    task.write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n"
                            for p in load_task("remainders", limit=3)))
    out = tmp / "out"
    args = _args("--tasks", str(task), "--task-kind", "word", "--system-prompt", "You are careful.",
                 "--max-critical-tokens", "32768", "--max-new-tokens", "600", "--batch-size", "2",
                 "--out", str(out), "--no-progress")
    assert run(args) == 0
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    return task, records, json.loads((out / "summary.json").read_text())


def test_provenance_in_summary(native_run) -> None:
    task, _, summary_ = native_run
    data = summary_["data"]["rem"]
    assert data["source"] == "file" and data["sha256"] == hashlib.sha256(task.read_bytes()).hexdigest()
    assert data["problems"] == 3 and len(data["problems_sha256"]) == 64
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert summary_["harness"]["commit"] == head and isinstance(summary_["harness"]["dirty"], bool)


def test_hub_task_provenance_names_the_cached_revision(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    from multiverse.evaluation.sources import source_of

    ref = tmp_path / "datasets--Idavidrein--gpqa" / "refs"  # a task the package has no copy of
    ref.mkdir(parents=True)
    (ref / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # where this machine's hub cache would be
    found = source_of("gpqa_diamond", None, [Problem("1", "q", "A", "choice")])
    assert found["source"] == "hub" and found["dataset"] == "Idavidrein/gpqa" and found["config"] == "gpqa_diamond"
    assert found["revision"] == "0123456789abcdef0123456789abcdef01234567"


def test_system_prompt_and_applied_template_are_stored(native_run) -> None:
    _, records, _ = native_run
    for r in records:
        assert r["prompt"][0] == {"role": "system", "content": "You are careful."}
        assert r["prompt_text"].startswith("<|im_start|>system\nYou are careful.<|im_end|>\n<|im_start|>user\n")
        assert r["prompt_text"].endswith("<|im_start|>assistant\n")
    assert build_prompt(Problem("1", "Q?", "1", "math"), EvalConfig(system_prompt="S.", chat=False, suffix=""), None) == "S.\n\nQ?"


def test_budget_past_the_context_is_capped_with_a_warning(native_run) -> None:
    _, records, summary_ = native_run
    assert summary_["backend"]["context_length"] == 4096
    assert any("32768" in w and "4096" in w and "max_position_embeddings" in w for w in summary_["warnings"])
    for r in records:
        prompt_len = len(r["prompt_text"])  # characters >= tokens here (no token is shorter than a character)
        assert r["budget"]["max_critical_tokens"] <= 4096 - 1 and r["budget"]["max_critical_tokens"] >= 4096 - prompt_len


def test_prompt_longer_than_the_context_is_refused(tmp_path) -> None:
    task = tmp_path / "long.jsonl"
    task.write_text(json.dumps({"question": "Let A = 83 mod 5. " * 400, "answer": "3"}) + "\n"
                    + json.dumps({"question": "Let A = 8 mod 5.", "answer": "3"}) + "\n")
    args = _args("--tasks", str(task), "--out", str(tmp_path / "out"), "--no-progress")
    with pytest.raises(UsageError, match=r"do not fit the model's context of 4096 tokens .*long/1 \(\d{4,} tokens\)"):
        run(args)
    assert not (tmp_path / "out" / "records.jsonl").exists() or not (tmp_path / "out" / "records.jsonl").read_text()


def test_engine_requests_flow_without_a_batch_barrier(tmp_path) -> None:
    """At --batch-size 2 the engine always holds 2 requests while any wait: a finished one is replaced at once,
    not when its batch's slowest finishes."""
    from engine.api import MultiverseLM
    from multiverse.evaluation.backends.native import NativeBackend
    from multiverse.evaluation.records import RecordFile
    from multiverse.evaluation.runner import run_samples

    lm = MultiverseLM(str(DEFAULT_MODEL))
    backend = NativeBackend(None, lm=lm)
    records = RecordFile(str(tmp_path / "records.jsonl"))
    submitted, in_flight = [0], []  # in_flight: (requests in the engine, requests submitted) at each step
    submit, step = lm.submit, lm.step

    def counting_submit(*a, **k):
        submitted[0] += 1
        return submit(*a, **k)

    def counting_step():
        in_flight.append((submitted[0] - len(records.records), submitted[0]))
        return step()

    lm.submit, lm.step = counting_submit, counting_step  # observed, not replaced: each calls the engine's own
    problems = [("remainders", p) for p in load_task("remainders", limit=5)]
    run_samples(backend, problems, EvalConfig(max_new_tokens=400, batch_size=2), records, progress=False)
    assert len(records.records) == 5
    lengths = sorted({r["critical_path"] for r in records.records})
    assert len(lengths) > 1  # requests of different lengths: a barrier would leave a slot idle
    # every step taken while a job was still unsubmitted ran with both slots full
    steps_with_work_waiting = [n for n, sent in in_flight if sent < 5]
    assert steps_with_work_waiting and all(n == 2 for n in steps_with_work_waiting)
