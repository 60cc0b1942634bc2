"""Entropy telemetry of an eval (multiverse/evaluation/entropy.py): AUROC, windowed entropy, early-stop savings,
and the engine's per-token entropies reaching the records (shipped model, 2 questions)."""
from __future__ import annotations

import pytest

from multiverse.evaluation.backends import make_backend
from multiverse.evaluation.entropy import auroc, early_stop, path_entropy, report, windowed
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.records import RecordFile
from multiverse.evaluation.runner import run_samples
from multiverse.evaluation.tasks import load_task


def record(correct, entropies, paths):
    tree = [{"depth": 0, "mean_entropy": 0.0}] + [{"depth": 1, "mean_entropy": h} for h in paths]
    return {"correct": correct, "entropies": entropies, "tree": tree}


def test_auroc_counts_pairs_and_ties():
    assert auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auroc([0, 1], [True, False]) == 0.0
    assert auroc([1, 1], [True, False]) == 0.5
    assert auroc([1, 2], [False, False]) is None


def test_windowed_mean_and_early_stop():
    assert windowed([1, 3, 5, 7], 2) == [1.0, 2.0, 4.0, 6.0]
    rows = [record(True, [0.0] * 10, [0.1]), record(False, [0.0, 0.0, 2.0, 2.0, 2.0], [0.9])]
    stop = early_stop(rows, h=0.5, window=2)
    assert stop["stopped"] == 1 and stop["stopped_correct"] == 0 and stop["tokens_saved"] == 2  # stops at index 2
    assert stop["saved_fraction"] == pytest.approx(2 / 15)
    assert path_entropy(rows[1]) == 0.9
    full = report(rows, window=2)
    assert full["auroc_path_entropy"] == 1.0 and full["mean_path_entropy_wrong"] == 0.9


def test_records_carry_per_token_entropies(tmp_path, one_thread):
    from multiverse.demo import DEFAULT_MODEL

    backend = make_backend("native", model=str(DEFAULT_MODEL))
    problems = [("remainders", p) for p in load_task("remainders", limit=2)]
    records = RecordFile(str(tmp_path / "records.jsonl"))
    done = run_samples(backend, problems, EvalConfig(temperature=1.0, max_new_tokens=800), records, progress=False)
    for r in done:
        assert len(r["entropies"]) == r["generated_tokens"] and all(h >= 0 for h in r["entropies"])
        means = [b["mean_entropy"] for b in r["tree"] if b["mean_entropy"] is not None]
        assert min(means) <= sum(r["entropies"]) / len(r["entropies"]) <= max(means)
