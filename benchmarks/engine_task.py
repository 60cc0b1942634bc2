"""The engine on the default model's own task at batch 1, 16 and 64 (benchmarks/engine.py's `task` section).

Workload: the first `questions` held-out questions of the default task (`remainders`, as `multiverse eval` asks
them: one chat turn), greedy, `ignore_eos`, `max_new_tokens` each, decoded by the default model with the engine's
default KV pool (sized from free memory), once forking (parallel=True) and once with parallel=False. Batch b
decodes the questions in chunks of b (batch 1: only the first `solo_questions`, it is a rate). Rounds run every
(mode, batch) back to back; tokens/s is the best round, the batch 64 / batch 16 ratio the median of paired rounds,
preemptions are counted over every run (stats.num_preemptions).
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from engine.api import MultiverseLM
from engine.params import SamplingParams


def run_chunks(lm: MultiverseLM, prompts: list[Any], batch: int, params: SamplingParams) -> tuple[float, int, int]:
    """(seconds, generated tokens, preemptions) of decoding `prompts` in chunks of `batch`."""
    seconds, tokens, preempted = 0.0, 0, 0
    for i in range(0, len(prompts), batch):
        start = time.perf_counter()
        outs = lm.generate(prompts[i : i + batch], params)
        seconds += time.perf_counter() - start
        tokens += sum(o.stats.generated_tokens for o in outs)
        preempted += sum(o.stats.num_preemptions for o in outs)
    return seconds, tokens, preempted


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
    rate: dict[tuple[str, int], list[float]] = {}
    preemptions: dict[tuple[str, int], int] = {}
    for r in range(rounds):
        for mode, lm in engines.items():
            for b in batches:
                chunk = prompts[:solo_questions] if b == 1 else prompts
                seconds, tokens, preempted = run_chunks(lm, chunk, b, params)
                rate.setdefault((mode, b), []).append(tokens / seconds)
                preemptions[(mode, b)] = preemptions.get((mode, b), 0) + preempted
                print(f"task round {r + 1}/{rounds} {mode:>10} batch {b:>2}: {tokens / seconds:7.1f} tokens/s, "
                      f"{preempted} preemptions", file=sys.stderr)
    rows = []
    for b in batches:
        row: dict[str, Any] = {"batch": b, "questions": solo_questions if b == 1 else questions}
        for mode in engines:
            row[f"{mode}_tokens_per_s"] = round(max(rate[(mode, b)]), 1)
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
            result[f"{mode}_batch64_vs_16"] = round(ratio, 3)
            result[f"{mode}_target_ok"] = preemptions[(mode, 64)] == 0 and ratio >= 1.0  # the target
    return result
