"""Curator throughput: samples per minute at concurrency 1 and 16 against the scripted loopback server with
1 s of latency per call. The server runs in its own process (its CPU time stays out of the client's).

Workload: s1K-1.1 sample rows (full traces) repeated under fresh ids and distinct questions; flat grouping (no nested blocks), so a
sample costs 2 + (number of blocks) calls. Each setting gets its own empty output folder and cache.
Then a resume with nothing to do: `--resume-rows` sample rows curated (no latency), then `multiverse curate`
started again on the finished folder as a fresh process, wall seconds (best of three).
Prints a short table, then ONE JSON line.
    python benchmarks/curate.py [--latency 1.0] [--samples-1 3] [--samples-16 64] [--resume-rows 30]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

import data_pipeline.curator  # noqa: F401 - imported here so that no timed run pays for importing the client
from data_pipeline.config import from_dict
from data_pipeline.pipeline import run_async
from multiverse.data import S1K_SAMPLE as SAMPLE  # the 10 s1K-1.1 rows shipped in the package


def write_input(path: Path, n: int) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = dict(rows[i % len(rows)], id=f"bench-{i:04d}")
            row["question"] += f" (benchmark copy {i})"  # distinct prompts: no copy is served from the cache
            f.write(json.dumps(row) + "\n")


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "data_pipeline.scripted_server", "--latency", str(latency),
                             "--max-seconds", "900"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def measure(base_url: str, concurrency: int, samples: int, work: Path) -> dict[str, float]:
    source = work / f"in-{concurrency}.jsonl"
    write_input(source, samples)
    cfg = from_dict({
        "input": {"source": str(source)},
        "output": {"dir": str(work / f"out-{concurrency}"), "save_dataset": False},
        "llm": {"base_url": base_url, "api_key": "bench", "model": "scripted", "timeout": 60},
        "run": {"concurrency": concurrency, "progress": False},
        "grouping": {"nested": False},
        "tokenizer": None,
    })
    start = time.perf_counter()
    result = asyncio.run(run_async(cfg, Console(stderr=True, quiet=True)))
    seconds = time.perf_counter() - start
    assert result.report["converted"] == samples, result.report["reasons"]
    calls = result.report["calls"]["requests"]
    return {"samples": samples, "seconds": round(seconds, 2), "calls": calls,
            "calls_per_sample": round(calls / samples, 2), "samples_per_minute": round(60 * samples / seconds, 2)}


def measure_noop_resume(base_url: str, rows: int, work: Path) -> dict[str, float]:
    """Seconds of a `multiverse curate` process on a folder where every sample is done (best of three)."""
    import os

    import yaml

    source = work / "in-resume.jsonl"
    write_input(source, rows)
    tree = {"input": {"source": str(source)}, "output": {"dir": str(work / "out-resume")},
            "llm": {"base_url": base_url, "api_key": "bench", "model": "scripted", "timeout": 60},
            "run": {"concurrency": 16, "progress": False}}
    config = work / "resume.yaml"
    config.write_text(yaml.safe_dump(tree))
    first = asyncio.run(run_async(from_dict(tree), Console(stderr=True, quiet=True)))
    assert first.report["converted"] == rows, first.report["reasons"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "multiverse.cli", "curate", "--config", str(config)], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return {"rows": rows, "seconds": round(min(times), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=1.0)
    p.add_argument("--samples-1", type=int, default=3)
    p.add_argument("--samples-16", type=int, default=64)
    p.add_argument("--resume-rows", type=int, default=30, help="0: skip the no-op resume measurement")
    args = p.parse_args()
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            seq = measure(url, 1, args.samples_1, Path(tmp))
            par = measure(url, 16, args.samples_16, Path(tmp))
            resume = measure_noop_resume(url, args.resume_rows, Path(tmp)) if args.resume_rows else None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    speedup = round(par["samples_per_minute"] / seq["samples_per_minute"], 2)
    print(f"{'concurrency':>11} {'samples':>8} {'seconds':>8} {'calls':>6} {'samples/min':>12}", file=sys.stderr)
    for c, r in ((1, seq), (16, par)):
        print(f"{c:>11} {r['samples']:>8} {r['seconds']:>8} {r['calls']:>6} {r['samples_per_minute']:>12}",
              file=sys.stderr)
    print(json.dumps({"benchmark": "curate", "latency_s": args.latency, "concurrency_1": seq,
                      "concurrency_16": par, "speedup": speedup, "resume_nothing_to_do": resume}))


if __name__ == "__main__":
    main()
