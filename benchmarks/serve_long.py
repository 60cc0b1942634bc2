"""The long-prompt scenario of benchmarks/serve.py: a long prompt arrives while N streams decode.

Each round, on the same server: (1) the long prompt alone, its time to first token (TTFT); (2) N streams start
decoding (ignore_eos, long answers); once every stream has sent `warm` chunks, the same long prompt arrives;
its TTFT under load is timed, and the streams run `tail_s` longer before they hang up. Reported: TTFT alone and
under load and their paired ratio per round, and the streams' chunk gaps (longest, median, longest/median), also
split into the gaps that end while the prompt is prefilled (sent .. its first token) and those outside: on a
shared machine the outside ones show how often the OS alone stalls a stream.
"""
from __future__ import annotations

import asyncio
import json
import statistics

import httpx

from benchmarks.serve_stats import StreamTimes, gap_summary, pct


async def stream_completion(http: httpx.AsyncClient, body: dict, times: StreamTimes) -> None:
    """POST a streamed completion and record when each chunk with text arrives."""
    async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"/v1/completions answered {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if any(c.get("text") for c in event.get("choices", [])):
                    times.chunk()


async def long_prompt_ttft(http: httpx.AsyncClient, prompt_ids: list[int], out: dict | None = None) -> float:
    """Its time to first token; `out["window"]` = (sent, first token) in perf_counter seconds."""
    times = StreamTimes()
    body = {"prompt": prompt_ids, "max_tokens": 8, "ignore_eos": True, "temperature": 0}
    await stream_completion(http, body, times)
    if times.ttft is None:
        raise RuntimeError("the long prompt's stream carried no text")
    if out is not None:
        out["window"] = (times.began, times.chunks[0])
    return times.ttft


async def one_round(http: httpx.AsyncClient, prompt_ids: list[int], streams: int, warm: int, tail_s: float,
                    out: dict) -> None:
    out["ttft_alone_s"] = await long_prompt_ttft(http, prompt_ids)
    times = [StreamTimes() for _ in range(streams)]
    bodies = [{"prompt": "Add each pair: 1+2, 3+4, 5+6.", "max_tokens": 1500, "ignore_eos": True, "temperature": 0.6,
               "seed": i} for i in range(streams)]
    tasks = [asyncio.create_task(stream_completion(http, b, t)) for b, t in zip(bodies, times)]
    out["streams"] = times
    try:
        while min(len(t.chunks) for t in times) < warm:
            if any(t.done() for t in tasks):
                raise RuntimeError("a decoding stream ended before the long prompt arrived (raise max_tokens)")
            await asyncio.sleep(0.05)
        out["ttft_loaded_s"] = await long_prompt_ttft(http, prompt_ids, out)
        await asyncio.sleep(tail_s)
        if any(t.done() for t in tasks):
            raise RuntimeError("a decoding stream ended before the round did (raise max_tokens)")
    finally:
        for task in tasks:
            task.cancel()  # hang up: the server aborts them
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_long(port: int, prompt_ids: list[int], stream_counts: list[int], rounds: int, timeout: float,
                   result: dict) -> None:
    """Fills result["long_prompt"] as it goes, so a timeout still reports the rounds that finished."""
    limits = httpx.Limits(max_connections=max(stream_counts) + 8, max_keepalive_connections=0)
    report = result.setdefault("long_prompt", {"prompt_tokens": len(prompt_ids)})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout, limits=limits) as http:
        await long_prompt_ttft(http, prompt_ids[:64])  # warm-up: first forward, allocator, code paths
        for n in stream_counts:
            rows = report.setdefault(f"streams_{n}", {"rounds": []})
            for _ in range(rounds):
                out: dict = {}
                try:
                    await one_round(http, prompt_ids, n, warm=20, tail_s=1.0, out=out)
                finally:
                    rows["rounds"].append(summarize_round(out))
                    rows.update(summarize_rows(rows["rounds"]))


def summarize_round(out: dict) -> dict:
    row = {k: round(out[k], 4) for k in ("ttft_alone_s", "ttft_loaded_s") if k in out}
    if "ttft_alone_s" in out and "ttft_loaded_s" in out:
        row["ttft_ratio"] = round(out["ttft_loaded_s"] / out["ttft_alone_s"], 3)
    if out.get("streams"):
        row["gaps"] = gap_summary(out["streams"], out.get("window"))
    return row


def summarize_rows(rounds: list[dict]) -> dict:
    """Medians over rounds of the paired TTFT ratio; the worst stream's longest/median gap over all rounds."""
    ratios = [r["ttft_ratio"] for r in rounds if "ttft_ratio" in r]
    worst = [r["gaps"]["longest_over_median"]["max"] for r in rounds if r.get("gaps", {}).get("streams")]
    during = [r["gaps"]["in_window_longest_over_median"]["max"] for r in rounds
              if r.get("gaps", {}).get("in_window_longest_over_median", {}).get("max") is not None]
    return {"ttft_ratio_median": round(statistics.median(ratios), 3) if ratios else None,
            "ttft_alone_s_median": pct([r["ttft_alone_s"] for r in rounds if "ttft_alone_s" in r], 0.5),
            "ttft_loaded_s_median": pct([r["ttft_loaded_s"] for r in rounds if "ttft_loaded_s" in r], 0.5),
            "worst_gap_over_median": max(worst) if worst else None,
            "worst_gap_over_median_during_prefill": max(during) if during else None,
            "done_when": {"gap_at_most_5x": bool(worst) and max(worst) <= 5,
                          "gap_during_prefill_at_most_5x": bool(during) and max(during) <= 5,
                          "ttft_at_most_2x": bool(ratios) and statistics.median(ratios) <= 2}}


def long_prompt_ids(tokenizer, n: int, rng) -> list[int]:  # noqa: ANN001 - a HF tokenizer
    """n ids of plain task text (questions of the default model's task, one after the other)."""
    from multiverse.demo.remainders import sample_problem

    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer(sample_problem(rng).question + "\n", add_special_tokens=False)["input_ids"]
    return ids[:n]
