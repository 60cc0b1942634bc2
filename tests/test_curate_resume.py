"""Kill-and-resume: `multiverse curate` killed (SIGKILL) at random points, then resumed, gives output identical
byte for byte to one uninterrupted run, with nothing duplicated and nothing lost, also when replies are
rejected and regenerated."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from curate_support import config_dict, make_input
from data_pipeline import curate
from data_pipeline.scripted_server import ScriptedServer, ServerConfig

ROWS = 10


def _journal_lines(out: Path) -> int:
    path = out / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _start(config: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "multiverse.cli", "curate", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _kill_after(proc: subprocess.Popen, out: Path, done_before: int, rng: random.Random) -> int:
    """SIGKILL once the journal holds a random number of new samples, plus a random fraction of a second."""
    target = min(done_before + rng.randint(1, 3), ROWS - 1)
    deadline = time.monotonic() + 60
    while _journal_lines(out) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    make_input(tmp_path / "in.jsonl", rows=ROWS)
    rng = random.Random(1234)
    # Reply-level faults keyed by the request's content: regenerations happen, identically in every run.
    server_cfg = ServerConfig(latency=0.05, max_seconds=240, fault_rate=0.3, fault_key="content",
                              faults=("truncated", "broken", "lost"))
    with ScriptedServer(server_cfg) as server:
        reference = curate(config_dict(tmp_path / "in.jsonl", tmp_path / "ref", server.base_url, tokenizer=None))
        killed_dir = tmp_path / "killed"
        config = tmp_path / "killed.yaml"
        config.write_text(yaml.safe_dump(config_dict(tmp_path / "in.jsonl", killed_dir, server.base_url,
                                                    tokenizer=None)))
        kills = 0
        for _ in range(3):
            before = _journal_lines(killed_dir)
            if before >= ROWS - 1:
                break
            code = _kill_after(_start(config), killed_dir, before, rng)
            kills += code == -signal.SIGKILL
        assert kills >= 2, "the runs finished before they could be killed"
        final = _start(config)
        assert final.wait(timeout=180) == (1 if reference.failed else 0)  # exit 1 when samples failed
    assert len(reference.curated) + len(reference.failed) == ROWS
    assert sum(c["regenerated"] for c in reference.report["stages"].values()) > 0
    for name in ("curated.jsonl", "failed.jsonl"):
        assert (killed_dir / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    ids = [json.loads(line)["id"] for line in (killed_dir / "journal.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == ROWS  # each sample journaled exactly once
    report = json.loads((killed_dir / "report.json").read_text())
    assert report["converted"] == len(reference.curated) and report["missing"] == 0
