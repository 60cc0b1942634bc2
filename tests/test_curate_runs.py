"""Run control of the curator on real folders against the scripted server on 127.0.0.1: the settings
fingerprint, the folder lock, input order, checks before LLM work, report before push, dry run, selection and
shards, and a resume with nothing to do."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate_support import config_dict, make_input, read_jsonl
from data_pipeline import curate
from data_pipeline.config import ConfigError
from data_pipeline.scripted_server import ScriptedServer, ServerConfig


@pytest.fixture()
def server():
    with ScriptedServer(ServerConfig(max_seconds=120)) as s:
        yield s


def _cfg(tmp_path, server, out="out", rows=3, **sections):
    if not (tmp_path / "in.jsonl").exists():
        make_input(tmp_path / "in.jsonl", rows=rows, sentences=20)
    sections.setdefault("tokenizer", None)
    return config_dict(tmp_path / "in.jsonl", tmp_path / out, server.base_url, **sections)


def test_changed_settings_are_refused_by_name_and_restart_starts_anew(tmp_path, server) -> None:
    first = curate(_cfg(tmp_path, server, rows=2))
    assert first.report["distance"]["threshold"] == 0.2
    changed = _cfg(tmp_path, server, checks={"max_distance": 0.3}, llm={"temperature": 0.7})
    with pytest.raises(ConfigError, match=r"checks\.max_distance: 0\.2 -> 0\.3; llm\.temperature: 0\.0 -> 0\.7"):
        curate(changed)
    again = curate(changed, restart=True)
    out = tmp_path / "out"
    assert len(read_jsonl(out / "replaced-1" / "journal.jsonl")) == 2  # the old run is kept aside
    assert again.report["distance"]["threshold"] == 0.3 and again.report["converted"] == 2
    assert {r["provenance"]["sampling"]["temperature"] for r in again.curated} == {0.7}
    assert again.report["fingerprint"] != first.report["fingerprint"]
    curate(changed)  # the new settings resume without complaint


def test_a_changed_input_row_is_curated_again(tmp_path, server) -> None:
    curate(_cfg(tmp_path, server))
    before = server.requests
    rows = read_jsonl(tmp_path / "in.jsonl")
    rows[1]["question"] += " (edited)"
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = curate(_cfg(tmp_path, server))
    assert server.requests > before and result.curated[1]["question"] == rows[1]["question"]


def test_outputs_follow_the_current_input_order(tmp_path, server) -> None:
    curate(_cfg(tmp_path, server))
    rows = read_jsonl(tmp_path / "in.jsonl")[::-1]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = server.requests
    result = curate(_cfg(tmp_path, server))
    assert server.requests == before  # nothing redone
    ids = [r["id"] for r in rows]
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "curated.jsonl")] == ids == [r["id"] for r in result.curated]


def test_a_second_process_on_the_folder_fails_at_once_and_a_killed_holder_does_not_block(tmp_path, server) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from data_pipeline.lock import FolderLock\n"
         f"with FolderLock({str(out)!r}):\n print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"in use by another curate run \(pid {holder.pid} "):
            curate(_cfg(tmp_path, server))
        assert server.requests == 0
    finally:
        holder.kill()  # SIGKILL: the lock file stays, the lock does not
        holder.wait(timeout=10)
    assert (out / ".lock").exists()
    assert curate(_cfg(tmp_path, server)).report["converted"] == 3


def test_the_tokenizer_is_checked_before_any_request(tmp_path, server) -> None:
    with pytest.raises(ConfigError, match="tokenizer: cannot load '/nonexistent/tokenizer'"):
        curate(_cfg(tmp_path, server, tokenizer="/nonexistent/tokenizer"))
    assert server.requests == 0 and not read_jsonl(tmp_path / "out" / "journal.jsonl")


def test_a_failing_push_keeps_the_report_and_exits_1(tmp_path, server, monkeypatch) -> None:
    import yaml

    from multiverse.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the push cannot succeed
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_cfg(tmp_path, server, output={"push_to_hub": "org/curated"})))
    assert main(["curate", "--config", str(config)]) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["converted"] == 3 and report["push"]["ok"] is False and "offline" in report["push"]["error"]
    assert len(read_jsonl(tmp_path / "out" / "curated.jsonl")) == 3


def test_dry_run_estimates_without_sending_or_writing(tmp_path, server) -> None:
    cfg = _cfg(tmp_path, server, llm={"prompt_price": 1.0, "completion_price": 4.0})
    estimate = curate(cfg, dry_run=True).report
    assert server.requests == 0 and not (tmp_path / "out").exists()
    traces = sum(len(r["deepseek_thinking_trajectory"]) for r in read_jsonl(tmp_path / "in.jsonl"))
    assert estimate["samples"] == 3 and estimate["calls"] >= 9 and estimate["prompt_tokens"] > traces / 4
    assert estimate["cost"] > 0
    real = curate(cfg).report
    assert real["tokens"]["calls"] >= 9  # the real run did at least what was estimated as the minimum
    assert curate(cfg, dry_run=True).report["samples"] == 0  # nothing left to do


def test_shards_together_equal_the_whole_run(tmp_path, server) -> None:
    from multiverse.cli import main

    make_input(tmp_path / "in.jsonl", rows=5, sentences=20)
    whole = curate(_cfg(tmp_path, server, out="whole")).curated
    parts = [curate(_cfg(tmp_path, server, out=f"shard-{i}", input={"shard": f"{i}/2"})).curated for i in range(2)]
    assert sorted(len(p) for p in parts) == [2, 3]
    merged = sorted(parts[0] + parts[1], key=lambda r: [w["id"] for w in whole].index(r["id"]))
    assert merged == whole
    window = curate(_cfg(tmp_path, server, out="window", input={"offset": 1, "limit": 3})).curated
    assert window == whole[1:4]
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_cfg(tmp_path, server, out="cli")))
    assert main(["curate", "--config", str(config), "--offset", "1", "--limit", "3", "--shard", "1/2"]) == 0
    assert read_jsonl(tmp_path / "cli" / "curated.jsonl") == whole[1:4][1::2]


def test_a_resume_with_nothing_to_do_reuses_statistics_and_dataset(tmp_path, server) -> None:
    cfg = _cfg(tmp_path, server, tokenizer="tiny")
    first = curate(cfg).report
    out = tmp_path / "out"
    stamps = {p: p.stat().st_mtime_ns for p in (out / "dataset" / "state.json", out / "distance_histogram.png")}
    assert all("structure" in e for e in read_jsonl(out / "journal.jsonl"))  # measured once, when curated
    second = curate(cfg).report
    assert second["structure"] == first["structure"] and second["structure"]["traces"] == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # neither rewritten
