"""Run a model over benchmark problems: accuracy, degree of parallelism and, side by side, wall-clock speedup.

Speedup follows SPEC §7: the same model decodes the same prompts strictly sequentially (`parallel=False`), on the
same hardware, batch by batch interleaved with the parallel run so machine noise hits both alike.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from tqdm import tqdm

from multiverse.evaluation.grading import is_correct
from multiverse.evaluation.tasks import Problem

PARALLEL_SUFFIX = "Think step by step and in parallel before answering."


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 1  # generations per problem (accuracy is their mean: pass@1)
    max_new_tokens: int = 4096
    max_critical_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0
    suffix: str = PARALLEL_SUFFIX  # appended to every question ("" for none)
    chat: bool = True  # apply the model's chat template when it has one


def build_prompt(problem: Problem, config: EvalConfig, tokenizer: Any) -> str | list[dict[str, str]]:
    text = f"{problem.question} {config.suffix}".strip() if config.suffix else problem.question
    if config.chat and getattr(tokenizer, "chat_template", None):
        return [{"role": "user", "content": text}]
    return text


def _params(config: EvalConfig, seed: int) -> Any:
    from engine.params import SamplingParams

    return SamplingParams(
        max_new_tokens=config.max_new_tokens,
        max_critical_tokens=config.max_critical_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=seed,
    )


def evaluate(
    lm: Any,
    problems: Sequence[tuple[str, Problem]],
    config: EvalConfig,
    baseline: Any | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One record per (task, problem, sample). `baseline`: the same model with parallel=False, for speedup."""
    jobs = [(task, p, s) for task, p in problems for s in range(config.samples)]
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="eval", unit="gen", disable=not progress)
    for start in range(0, len(jobs), config.batch_size):
        batch = jobs[start : start + config.batch_size]
        prompts = [build_prompt(p, config, lm.tokenizer) for _, p, _ in batch]
        params = [_params(config, config.seed * 1_000_003 + start + i) for i in range(len(batch))]
        outs, wall = _timed(lm, prompts, params)
        seq_outs, seq_wall = _timed(baseline, prompts, params) if baseline is not None else (None, None)
        for i, ((task, problem, sample), out) in enumerate(zip(batch, outs)):
            record = _record(task, problem, sample, out, wall, seq_outs[i] if seq_outs else None, seq_wall)
            records.append({**record, "batch": start // config.batch_size})
        bar.update(len(batch))
        bar.set_postfix(acc=f"{sum(r['correct'] for r in records) / len(records):.3f}")
    bar.close()
    return records


def _timed(lm: Any, prompts: list[Any], params: list[Any]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    outs = lm.generate(prompts, params)
    return outs, time.perf_counter() - start


def _record(task: str, problem: Problem, sample: int, out: Any, wall: float, seq: Any, seq_wall: float | None) -> dict:
    correct, predicted = is_correct(problem, out.text)
    record = {
        "task": task,
        "id": problem.id,
        "sample": sample,
        "gold": problem.answer,
        "predicted": predicted,
        "correct": correct,
        "generated_tokens": out.stats.generated_tokens,
        "critical_path": out.stats.critical_path,
        "degree_of_parallelism": out.stats.degree_of_parallelism,
        "forks": out.stats.num_forks,
        "fallbacks": list(out.stats.fallbacks),
        "finish_reason": out.finish_reason,
        "batch_wall_s": wall,
        "text": out.text,
    }
    if seq is not None:
        seq_correct, _ = is_correct(problem, seq.text)
        record.update(seq_correct=seq_correct, seq_generated_tokens=seq.stats.generated_tokens, seq_batch_wall_s=seq_wall)
    return record
