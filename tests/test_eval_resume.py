"""Records and resume: a real `multiverse eval` subprocess killed by SIGKILL, then resumed, gives the records of
an uninterrupted run; torn last lines are dropped; a resume with other settings is refused."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from multiverse.errors import UsageError
from multiverse.evaluation.cli import add_arguments, prepare_out, resolve_settings
from multiverse.evaluation.records import RecordFile, comparable, key_of, sample_seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--tasks", "remainders", "--limit", "3", "--batch-size", "1", "--max-new-tokens", "120", "--temperature", "0.6",
        "--no-progress"]


def _eval(*extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "multiverse.cli", "eval", *ARGS, *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(path) -> list[dict]:
    return sorted((comparable(json.loads(line)) for line in path.read_text().splitlines()), key=key_of)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = _eval("--out", str(killed))
    records = killed / "records.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = records.read_text().count("\n")
    assert 1 <= done_before < 3 and not (killed / "summary.json").exists()
    again = _eval("--resume", str(killed))
    reference = _eval("--out", str(whole))
    for p in (again, reference):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    assert _records(records) == _records(whole / "records.jsonl")
    assert len(_records(records)) == 3
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["model"]["sha256"] and summary["versions"]["torch"] and summary["settings"]["protocol"]["temperature"] == 0.6
    first = json.loads(records.read_text().splitlines()[0])
    assert first["seed"] == sample_seed(0, "remainders", first["id"], 0)
    for field in ("prompt", "raw_text", "graded_text", "method", "finish_reason", "tree", "generated_tokens",
                  "forced_tokens", "critical_path", "valid"):
        assert field in first


def test_torn_last_line_is_dropped(tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"task": "t", "id": "a", "sample": 0}) + "\n" + '{"task": "t", "id": "b", "sa')
    rf = RecordFile(str(path))
    assert rf.done == {("t", "a", 0)}
    rf.append({"task": "t", "id": "b", "sample": 0})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_seeds_depend_on_the_sample_key_only() -> None:
    a = sample_seed(0, "aime24", "2024-I-1", 3)
    assert a == sample_seed(0, "aime24", "2024-I-1", 3) and 0 <= a < 2**62
    assert len({a, sample_seed(0, "aime24", "2024-I-1", 4), sample_seed(0, "aime25", "2024-I-1", 3), sample_seed(1, "aime24", "2024-I-1", 3)}) == 4


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_resume_with_other_settings_or_reusing_an_out_dir_is_refused(tmp_path) -> None:
    out = str(tmp_path / "run")
    args = _args("--tasks", "remainders", "--out", out)
    prepare_out(args, resolve_settings(args))
    (tmp_path / "run" / "records.jsonl").write_text("")
    with pytest.raises(UsageError, match="--resume"):
        prepare_out(args, resolve_settings(args))
    other = _args("--tasks", "remainders", "--temperature", "0.7", "--resume", out)
    with pytest.raises(UsageError, match="protocol"):
        prepare_out(other, resolve_settings(other))
    same = _args("--tasks", "remainders", "--resume", out)
    assert prepare_out(same, resolve_settings(same)) == out
