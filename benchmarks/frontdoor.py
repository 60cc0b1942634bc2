"""How fast `multiverse serve` refuses oversized requests, and whether /health waits meanwhile.

Starts the server in-process on 127.0.0.1 (the shipped default model, default limits) while a thread polls
/health every 20 ms. Each round sends, one after the other: a 4 MB body (413 from Content-Length, unread),
a 1 MB prompt (under the 1 MiB body cap, over the character cap: 400 untokenized), a 4 MB chunked body
(413 once 1 MiB has arrived), and a normal 8-token request. Prints ONE JSON line: milliseconds per kind
(median and max over rounds), /health latency over the whole run (median, p99, max).
    python benchmarks/frontdoor.py [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.api import MultiverseLM  # noqa: E402
from engine.server.config import ServerConfig  # noqa: E402
from engine.server.launch import Server, bind  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402

MB4 = json.dumps({"prompt": "1+1 " * 1_000_000}).encode()
MB1 = json.dumps({"prompt": "1+1 " * 250_000}).encode()
JSON = {"Content-Type": "application/json"}


def chunks(body: bytes, size: int = 65536):
    return (body[i : i + size] for i in range(0, len(body), size))


def poll(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=60) as http:
        while not stop.is_set():
            began = time.perf_counter()
            http.get(url + "/health")
            out.append(time.perf_counter() - began)
            time.sleep(0.02)


def timed(http: httpx.Client, expect: int, **kwargs) -> float:
    began = time.perf_counter()
    r = http.post("/v1/completions", **kwargs)
    took = time.perf_counter() - began
    if r.status_code != expect:
        raise SystemExit(f"expected {expect}, got {r.status_code}: {r.text[:200]}")
    return took * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    server = Server(MultiverseLM(str(DEFAULT_MODEL)), ServerConfig(), bind("127.0.0.1", 0)).start()
    health: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=poll, args=(server.url, stop, health), daemon=True)
    prober.start()
    kinds: dict[str, list[float]] = {"body_4mb_413": [], "prompt_1mb_400": [], "chunked_4mb_413": [], "request_8_tokens_200": []}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(args.rounds):
                kinds["body_4mb_413"].append(timed(http, 413, content=MB4, headers=JSON))
                kinds["prompt_1mb_400"].append(timed(http, 400, content=MB1, headers=JSON))
                kinds["chunked_4mb_413"].append(timed(http, 413, content=chunks(MB4), headers=JSON))
                kinds["request_8_tokens_200"].append(timed(http, 200, json={"prompt": "Add", "max_tokens": 8}))
    finally:
        stop.set()
        prober.join(10)
        server.stop()
    ms = sorted(h * 1000 for h in health)
    result = {"bench": "frontdoor", "rounds": args.rounds, "cpus": os.cpu_count(), "body_cap_bytes": server.state.limits.body_bytes,
              "prompt_char_cap": server.state.limits.prompt_chars}
    for kind, values in kinds.items():
        result[f"{kind}_ms_p50"] = round(statistics.median(values), 1)
        result[f"{kind}_ms_max"] = round(max(values), 1)
    result.update(health_probes=len(ms), health_ms_p50=round(statistics.median(ms), 1),
                  health_ms_p99=round(ms[int(0.99 * (len(ms) - 1))], 1), health_ms_max=round(ms[-1], 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
