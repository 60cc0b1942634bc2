"""Decoding controls in `multiverse eval`: flags checked before any model loads, recorded in every record and
summary, and `--sweep NAME=V1,V2` writes one run per value, a table and a PNG (shipped model, 3 questions)."""
from __future__ import annotations

import argparse
import json

import pytest

from multiverse.errors import UsageError
from multiverse.evaluation.cli import add_arguments, prepare_out, resolve_settings
from multiverse.evaluation.control_sweep import parse_sweep
from multiverse.evaluation.session import Session

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(("argv", "needle"), [
    (["--fork-threshold", "1.2"], "fork_threshold must be in"),
    (["--path-factor", "2"], "needs path_rule"),
    (["--sweep", "temperature=0,1"], "NAME one of"),
    (["--sweep", "fork_threshold=0.5,2"], "fork_threshold must be in"),
    (["--sweep", "fork_bias=1,1"], "repeated"),
    (["--sweep", "fork_bias=1", "--budgets", "8"], "one sweep per run"),
    (["--backend", "sglang", "--url", "http://127.0.0.1:1", "--merge", "refresh"], "merge='refresh' runs in the native"),
    (["--backend", "sglang", "--url", "http://127.0.0.1:1", "--temperature", "0.6", "--sweep", "fork_threshold=0.5"],
     "fork_threshold with temperature > 0"),
])
def test_bad_control_flags_fail_before_loading(argv, needle):
    with pytest.raises(UsageError, match=needle):
        resolve_settings(_args(*argv))


def test_parse_sweep_switches_the_factor_rule_on():
    assert parse_sweep("path-factor=0.5,2") == {"name": "path_factor", "values": [0.5, 2.0]}
    assert parse_sweep("max_concurrent_paths=1,2")["values"] == [1, 2]


def test_sweep_writes_a_run_per_value_a_table_and_a_png(tmp_path):
    out = tmp_path / "sweep"
    args = _args("--tasks", "remainders", "--limit", "3", "--max-new-tokens", "700", "--sweep", "fork_bias=0,-10000",
                 "--out", str(out), "--no-progress")
    settings = resolve_settings(args)
    assert Session(settings, prepare_out(args, settings), progress=False).run() == 0
    rows = json.loads((out / "control_sweep.json").read_text())
    free, never = (next(r for r in rows if r["value"] == v) for v in (0.0, -10000.0))
    assert free["forked"]["mean"] == 1.0 and free["fork_acceptance_rate"] == 1.0 and free["degree_of_parallelism"]["mean"] > 1.5
    assert never["forked"]["mean"] == 0.0 and never["fork_acceptance_rate"] is None
    assert never["degree_of_parallelism"]["mean"] == 1.0 and never["controls"]["fork_bias"] == -10000.0
    records = [json.loads(x) for x in (out / "sweep" / "fork_bias=0.0" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["controls"]["fork_bias"] == 0.0 and r["fork_proposals"] == 1 for r in records)
    assert all(b["mean_entropy"] is not None for r in records for b in r["tree"])
    assert "fork_bias=-10000.0" in (out / "control_sweep.md").read_text()
    assert (out / "sweep_fork_bias.png").stat().st_size > 10_000
