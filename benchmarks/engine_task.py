"""The engine on the default model's own task at batch 1, 16 and 64 (benchmarks/engine.py's `task` section).

Workload: the first `questions` held-out questions of the default task (`remainders`, as `multiverse eval` asks
them: one chat turn), greedy, `ignore_eos`, `max_new_tokens` each, decoded by the default model with the engine's
default KV pool (sized from free memory), once forking (parallel=True) and once with parallel=False. Batch b
decodes the questions in chunks of b (batch 1: only the first `solo_questions`, it is a rate). Rounds run every
(mode, batch) back to back; tokens/s is the best round, the batch 64 / batch 16 ratio the median of paired rounds,
preemptions are counted over every run (stats.num_preemptions). Tokens per CPU second (this process's CPU time,
one thread) are reported beside: on a shared machine they show the work's cost without the time others took.
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from engine.api import MultiverseLM
from engine.params import SamplingParams


def run_chunks(lm: MultiverseLM, prompts: list[Any], batch: int, params: SamplingParams) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds of this process, generated tokens, preemptions) of decoding `prompts` in chunks
    of `batch`. CPU time is what the work cost; wall time also holds what other jobs took from the shared cores."""
    wall, cpu, tokens, preempted = 0.0, 0.0, 0, 0
    for i in range(0, len(prompts), batch):
        start, start_cpu = time.perf_counter(), time.process_time()
        outs = lm.generate(prompts[i : i + batch], params)
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - start_cpu
        tokens += sum(o.stats.generated_tokens for o in outs)
        preempted += sum(o.stats.num_preemptions for o in outs)
    return wall, cpu, tokens, preempted


def bench_task(
    questions: int, solo_questions: int, max_new_tokens: int, rounds: int, batches: list[int], num_pages: int | None = None
) -> dict:
    """`num_pages` None: the computed default pool (2048 reproduces the fixed default before it was computed)."""
    from multiverse.demo import DEFAULT_MODEL
    from multiverse.evaluation.tasks import remainders_problems

    prompts = [[{"role": "user", "content": p.question}] for p in remainders_problems(questions)]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0, ignore_eos=True)
    size = {} if num_pages is None else {"num_pages": num_pages}  # default: every engine option, the pool computed
    fork = MultiverseLM(str(DEFAULT_MODEL), **size)
    engines = {"parallel": fork, "sequential": MultiverseLM(fork.model, fork.tokenizer, parallel=False, **size)}
    fork.generate(prompts[:2], SamplingParams(max_new_tokens=16, temperature=0))  # warm-up
    rate: dict[tuple[str, int], list[float]] = {}  # wall-clock tokens/s per round
    cpu_rate: dict[tuple[str, int], list[float]] = {}  # tokens per CPU second per round
    preemptions: dict[tuple[str, int], int] = {}
    for r in range(rounds):
        for mode, lm in engines.items():
            for b in batches:
                chunk = prompts[:solo_questions] if b == 1 else prompts
                wall, cpu, tokens, preempted = run_chunks(lm, chunk, b, params)
                rate.setdefault((mode, b), []).append(tokens / wall)
                cpu_rate.setdefault((mode, b), []).append(tokens / cpu)
                preemptions[(mode, b)] = preemptions.get((mode, b), 0) + preempted
                print(f"task round {r + 1}/{rounds} {mode:>10} batch {b:>2}: {tokens / wall:7.1f} tokens/s "
                      f"({tokens / cpu:7.1f} per CPU s), {preempted} preemptions", file=sys.stderr)
    rows = []
    for b in batches:
        row: dict[str, Any] = {"batch": b, "questions": solo_questions if b == 1 else questions}
        for mode in engines:
            row[f"{mode}_tokens_per_s"] = round(max(rate[(mode, b)]), 1)
            row[f"{mode}_tokens_per_cpu_s"] = round(max(cpu_rate[(mode, b)]), 1)
            row[f"{mode}_preemptions"] = preemptions[(mode, b)]
        rows.append(row)
    result: dict[str, Any] = {
        "model": "default (multiverse/assets/tiny-multiverse)",
        "task": "remainders",
        "max_new_tokens": max_new_tokens,
        "rounds": rounds,
        "kv": fork.kv.describe(),
        "rows": rows,
    }
    if 16 in batches and 64 in batches:
        for mode in engines:
            ratio = statistics.median(a / b for a, b in zip(rate[(mode, 64)], rate[(mode, 16)]))
            cpu_ratio = statistics.median(a / b for a, b in zip(cpu_rate[(mode, 64)], cpu_rate[(mode, 16)]))
            result[f"{mode}_batch64_vs_16"] = round(ratio, 3)
            result[f"{mode}_batch64_vs_16_cpu"] = round(cpu_ratio, 3)
            result[f"{mode}_target_ok"] = preemptions[(mode, 64)] == 0 and ratio >= 1.0  # the target
    return result
