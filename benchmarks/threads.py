"""The README's first command with 1 vs 2 torch intra-op threads: `multiverse generate "Add each pair: ..."`.

Each round runs the real CLI in a subprocess twice, back to back, once per thread count (order alternating), and
reads the decode's own wall time from its JSON result; the process wall time (imports and model load included) is
reported too. Prints ONE JSON line: medians per thread count and the median paired ratio.
    python benchmarks/threads.py [--rounds 5] [--prompt "..."]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Add each pair: 17+5, 49+26, 35+21."


def one(threads: int, prompt: str) -> tuple[float, float]:
    """(decode wall time, process wall time) in seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "multiverse.cli", "generate", "--json", "--no-live", "--threads", str(threads), prompt]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    total = time.perf_counter() - start
    return json.loads(proc.stdout.strip().splitlines()[-1])["stats"]["wall_time_s"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="pairs of runs")
    parser.add_argument("--prompt", default=PROMPT, help="the prompt")
    args = parser.parse_args()
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for r in range(args.rounds):
        for t in (1, 2) if r % 2 == 0 else (2, 1):
            runs[t].append(one(t, args.prompt))
    ratios = [b[0] / a[0] for a, b in zip(runs[1], runs[2])]
    print(json.dumps({
        "bench": "threads", "rounds": args.rounds, "cpus": os.cpu_count(),
        "decode_s_1_thread": round(statistics.median(d for d, _ in runs[1]), 3),
        "decode_s_2_threads": round(statistics.median(d for d, _ in runs[2]), 3),
        "process_s_1_thread": round(statistics.median(p for _, p in runs[1]), 2),
        "process_s_2_threads": round(statistics.median(p for _, p in runs[2]), 2),
        "slowdown_2_over_1": round(statistics.median(ratios), 2),
    }))


if __name__ == "__main__":
    main()
