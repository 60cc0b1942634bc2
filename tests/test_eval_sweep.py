"""Budget control: one run per budget (increasing), model and baseline side by side, a PNG per task and a table."""
from __future__ import annotations

import argparse
import json

import pytest

from multiverse.demo import BASELINE_MODEL, DEFAULT_MODEL
from multiverse.errors import UsageError
from multiverse.evaluation.cli import add_arguments, prepare_out, resolve_settings
from multiverse.evaluation.session import Session
from multiverse.evaluation.sweep import parse_budgets

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_parse_budgets() -> None:
    assert parse_budgets("4096,1024,2048") == [1024, 2048, 4096]
    for bad in ("1024,x", "0,8", "8,8", ""):
        with pytest.raises(ValueError, match="--budgets"):
            parse_budgets(bad)
    with pytest.raises(UsageError, match="--budgets"):
        resolve_settings(_args("--budgets", "64,-1"))
    with pytest.raises(UsageError, match="--speed-batch-size"):
        resolve_settings(_args("--speed-batch-size", "0"))


def test_baseline_evaluated_next_to_the_model_and_timed_against_it(tmp_path) -> None:
    """--baseline-model without --budgets: both models graded on the same questions (the baseline with its own
    suffix, never forking) and the baseline is the sequential side of the paired speed runs."""
    out = tmp_path / "pair"
    args = _args("--tasks", "remainders", "--limit", "3", "--max-new-tokens", "40", "--baseline-model", str(BASELINE_MODEL),
                 "--baseline-suffix", " Step by step.", "--compare-sequential", "--speed-questions", "3",
                 "--speed-batch-size", "2", "--out", str(out), "--no-progress")
    settings = resolve_settings(args)
    assert Session(settings, prepare_out(args, settings), progress=False).run() == 0
    summary = json.loads((out / "summary.json").read_text())
    model = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    baseline = [json.loads(x) for x in (out / "baseline" / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in model) == sorted(r["id"] for r in baseline) and len(model) == 3
    assert all(r["forks"] == 0 and r["degree_of_parallelism"] == 1.0 for r in baseline)
    assert all(r["prompt"][-1]["content"].endswith(" Step by step.") for r in baseline)
    assert not any(r["prompt"][-1]["content"].endswith(" Step by step.") for r in model)
    assert summary["baseline_tasks"]["remainders"]["questions"] == 3 and summary["tasks"]["remainders"]["run_wall_per_sample_s"] > 0
    assert summary["speed"]["batch_size"] == 2 and summary["speed"]["pairs"] == 4  # 2 chunks x 2 rounds
    assert all(p["sequential"]["forks"] == 0 for p in map(json.loads, (out / "speed.jsonl").read_text().splitlines()))


def test_baseline_with_forks_is_an_earlier_multiverse_model(tmp_path) -> None:
    """--baseline-forks: the baseline is decoded with forks (a training chain's starting point), so the speed runs
    time the model against it forking; without --baseline-model the flag is refused."""
    with pytest.raises(UsageError, match="--baseline-forks decodes --baseline-model"):
        resolve_settings(_args("--baseline-forks"))
    out = tmp_path / "chain"
    args = _args("--tasks", "remainders", "--limit", "2", "--max-new-tokens", "400", "--baseline-model", str(DEFAULT_MODEL),
                 "--baseline-forks", "--compare-sequential", "--speed-questions", "2", "--out", str(out), "--no-progress")
    settings = resolve_settings(args)
    assert Session(settings, prepare_out(args, settings), progress=False).run() == 0
    model = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    baseline = [json.loads(x) for x in (out / "baseline" / "records.jsonl").read_text().splitlines()]
    assert any(r["forks"] > 0 for r in model)  # the same model on both sides: the same trees
    assert [(r["id"], r["forks"], r["raw_text"]) for r in baseline] == [(r["id"], r["forks"], r["raw_text"]) for r in model]
    pairs = [json.loads(x) for x in (out / "speed.jsonl").read_text().splitlines()]
    assert [p["sequential"]["forks"] for p in pairs] == [p["parallel"]["forks"] for p in pairs]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["speed"]["sequential_side"] == "baseline" and summary["speed"]["speedup"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["critical", "total"])
def test_budget_sweep_plots_model_and_baseline(tmp_path, kind) -> None:
    out = tmp_path / "sweep"
    args = _args("--tasks", "remainders", "--limit", "2", "--budgets", "90,30", "--budget-kind", kind,
                 "--baseline-model", str(BASELINE_MODEL), "--out", str(out), "--no-progress")
    settings = resolve_settings(args)
    assert settings["budgets"] == [30, 90]
    assert Session(settings, prepare_out(args, settings), progress=False).run() == 0
    rows = json.loads((out / "budget_sweep.json").read_text())
    task = [r for r in rows if r["task"] == "remainders"]
    assert [(r["label"], r["budget"]) for r in task] == [("model", 30), ("model", 90), ("baseline", 30), ("baseline", 90)]
    used = "critical_path" if kind == "critical" else "generated_tokens"
    for label in ("model", "baseline"):
        for budget in (30, 90):
            recs = [json.loads(x) for x in (out / label / f"budget-{budget}" / "records.jsonl").read_text().splitlines()]
            assert len(recs) == 2 and all(r[used] <= budget for r in recs)
            assert any(r["truncated"] for r in recs) or budget == 90
        means = [r[used]["mean"] for r in task if r["label"] == label]
        assert means[0] <= means[1]  # a larger budget never decodes less (greedy, same seeds)
    assert all(r["degree_of_parallelism"]["mean"] == 1.0 for r in task if r["label"] == "baseline")
    png = out / "budget_remainders.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "budget_sweep.md").read_text()
    assert table.count("| remainders |") == 4 and f"30 ({kind})" in table
