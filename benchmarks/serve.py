"""`multiverse serve` on loopback under load: one JSON line on stdout, whatever happens.

Starts `multiverse serve` (the shipped tiny model unless --model) as a subprocess, waits for /health however
long start-up takes (bounded by --startup-timeout), runs a scenario, reads /metrics once the engine is idle and
stops the server with SIGTERM:

- `--scenario hostile` (benchmarks/serve_hostile.py): streaming clients, clients that hang up mid-stream and a
  stream of malformed requests at once: resets, 5xx, good requests harmed by a neighbour, malformed requests
  without a 4xx, KV pages in use afterwards, latency, time to first token and the gaps between stream chunks;
- `--scenario long-prompt` (benchmarks/serve_long.py): a --prompt-tokens prompt arrives while --streams
  streams decode; its time to first token alone and under load (paired, each round), and every stream's longest
  gap between chunks against its median gap. The server gets `--max-running` streams + 1 unless --server-args
  sets it (so the prompt never waits for a free seat).

On a timeout, an error or Ctrl-C the line still comes, with "error" and the results measured until then.
Progress goes to stderr, the server's log to benchmarks/.serve.log.

    python benchmarks/serve.py [--scenario hostile] [--model PATH] [--clients 64] [--rounds 3] [--leavers 16]
    python benchmarks/serve.py --scenario long-prompt [--streams 16 64] [--prompt-tokens 2000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

from benchmarks.serve_hostile import Tally, hostile_summary, run_hostile  # noqa: E402
from benchmarks.serve_long import long_prompt_ids, run_long  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=("hostile", "long-prompt"), default="hostile")
    p.add_argument("--model", default=None, help="model path (default: the shipped tiny model)")
    p.add_argument("--clients", type=int, default=64, help="hostile: streaming chat clients")
    p.add_argument("--rounds", type=int, default=3, help="hostile: questions per client; long-prompt: paired rounds")
    p.add_argument("--leavers", type=int, default=16, help="hostile: clients that hang up mid-stream")
    p.add_argument("--streams", type=int, nargs="+", default=[16, 64], help="long-prompt: decoding streams (each)")
    p.add_argument("--prompt-tokens", type=int, default=2000, help="long-prompt: length of the arriving prompt")
    p.add_argument("--max-model-len", type=int, default=None, help="default: 1024 (hostile), 4096 (long-prompt)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--server-args", default="", help="extra `multiverse serve` flags, e.g. '--max-batch-tokens 256'")
    p.add_argument("--startup-timeout", type=float, default=1800, help="bound on the server's start-up (s)")
    p.add_argument("--timeout", type=float, default=900, help="bound on the whole load (s)")
    args = p.parse_args()
    if args.max_model_len is None:
        args.max_model_len = 1024 if args.scenario == "hostile" else 4096
    if args.scenario == "long-prompt" and "--max-running" not in args.server_args:  # every stream and the prompt run
        args.server_args = f"{args.server_args} --max-running {max(args.streams) + 1}".strip()
    return args


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "multiverse.cli", "serve", "--port", str(port), "--threads", str(args.threads),
           "--max-model-len", str(args.max_model_len), "--served-model-name", "tiny", *args.server_args.split()]
    cmd += ["--model", args.model] if args.model else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    log = open(ROOT / "benchmarks" / ".serve.log", "w")  # the server's request log, for a look afterwards
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), port


def wait_healthy(server: subprocess.Popen, port: int, bound: float) -> float:
    """Seconds until /health answers 200; raises if the server exits first or `bound` passes."""
    began = time.monotonic()
    while time.monotonic() - began < bound:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} during start-up; see benchmarks/.serve.log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return time.monotonic() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer /health within --startup-timeout {bound:g} s")


def metric(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def idle_metrics(port: int, bound: float = 30) -> dict:
    """/metrics once the engine has drained what the clients left (it should be nothing)."""
    deadline = time.monotonic() + bound
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        busy = metric(text, "multiverse_requests_running") + metric(text, "multiverse_requests_waiting")
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"kv_pages_in_use_after": int(metric(text, "multiverse_kv_pages_used")),
            "aborts": int(metric(text, "multiverse_aborts_total")),
            "generated_tokens": int(metric(text, "multiverse_generation_tokens_total")),
            "forks": int(metric(text, "multiverse_forks_total"))}


def run_scenario(args: argparse.Namespace, port: int, result: dict, tally: Tally) -> None:
    if args.scenario == "hostile":
        print(f"load: {args.clients} x {args.rounds} streams, {args.leavers} leavers, malformed", file=sys.stderr)
        asyncio.run(asyncio.wait_for(run_hostile(port, args, tally), args.timeout))
        return
    from transformers import AutoTokenizer

    from multiverse.demo import DEFAULT_MODEL

    ids = long_prompt_ids(AutoTokenizer.from_pretrained(args.model or str(DEFAULT_MODEL)), args.prompt_tokens, random.Random(0))
    print(f"load: a {len(ids)}-token prompt beside {args.streams} decoding streams, {args.rounds} rounds", file=sys.stderr)
    asyncio.run(asyncio.wait_for(run_long(port, ids, args.streams, args.rounds, args.timeout, result), args.timeout))


def main() -> int:
    args = parse_args()
    result: dict = {"scenario": args.scenario, "server_args": args.server_args}
    tally, began, server = Tally(), time.perf_counter(), None
    try:
        server, port = start_server(args)
        result["startup_s"] = round(wait_healthy(server, port, args.startup_timeout), 1)
        print(f"server up on :{port} after {result['startup_s']} s", file=sys.stderr)
        began = time.perf_counter()
        run_scenario(args, port, result, tally)
        result.update(idle_metrics(port))
    except BaseException as err:  # noqa: BLE001 - the JSON line comes anyway, saying what went wrong
        result["error"] = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    finally:
        if args.scenario == "hostile":
            result.update(hostile_summary(args, tally))
        result["wall_s"] = round(time.perf_counter() - began, 1)
        result["server_exit"] = stop_server(server)
        print(json.dumps(result))
    return 1 if "error" in result else 0


def stop_server(server: subprocess.Popen | None) -> int | str | None:
    if server is None:
        return None
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        return "killed"


if __name__ == "__main__":
    sys.exit(main())
