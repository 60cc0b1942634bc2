"""Run a backend over (task, question, sample) jobs; each finished sample is graded and appended at once.

Jobs already in the record file are skipped (resume). Seeds come from (base seed, task, id, sample), so a
resumed run, a run with more tasks and a run in another order all give each sample the same seed.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from multiverse.evaluation.analysis import validity
from multiverse.evaluation.backends.base import Backend, Decoding, Generation, Prompt
from multiverse.evaluation.grading import grade, graded_text, special_tokens
from multiverse.evaluation.protocol import PARALLEL_SUFFIX, EvalConfig
from multiverse.evaluation.records import RecordFile, sample_seed
from multiverse.evaluation.tasks import Problem

Job = tuple[str, Problem, int]  # (task, problem, sample index)


def build_prompt(problem: Problem, config: EvalConfig, tokenizer: Any) -> Prompt:
    suffix = config.suffix if config.suffix is not None else problem.suffix if problem.suffix is not None else PARALLEL_SUFFIX
    text = f"{problem.question} {suffix}".strip() if suffix else problem.question
    if config.chat and getattr(tokenizer, "chat_template", None):
        return [{"role": "user", "content": text}]
    return text


def decoding(config: EvalConfig, seed: int) -> Decoding:
    return Decoding(config.max_new_tokens, config.max_critical_tokens, config.temperature, config.top_p, seed,
                    dict(config.controls))


def jobs_of(problems: Sequence[tuple[str, Problem]], samples: int) -> list[Job]:
    return [(task, p, s) for task, p in problems for s in range(samples)]


def run_samples(
    backend: Backend,
    problems: Sequence[tuple[str, Problem]],
    config: EvalConfig,
    records: RecordFile,
    desc: str = "eval",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate and grade every job not yet in `records`; returns all records of these jobs (old and new)."""
    jobs = jobs_of(problems, config.samples)
    todo = [j for j in jobs if (j[0], j[1].id, j[2]) not in records.done]
    specials = special_tokens(backend.tokenizer)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="gen", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        prompts = [build_prompt(p, config, backend.tokenizer) for _, p, _ in batch]
        seeds = [sample_seed(config.seed, task, p.id, s) for task, p, s in batch]
        for i, gen in backend.generate(prompts, [decoding(config, seed) for seed in seeds]):
            task, problem, sample = batch[i]
            records.append({**make_record(task, problem, sample, seeds[i], prompts[i], gen, specials),
                            "controls": dict(config.controls)})
            bar.update(1)
        mine = [r for r in records.records if r["task"] in {t for t, _ in problems}]
        bar.set_postfix(acc=f"{sum(r['correct'] for r in mine) / max(1, len(mine)):.3f}")
    bar.close()
    wanted = {(t, p.id, s) for t, p, s in jobs}
    return [r for r in records.records if (r["task"], r["id"], int(r["sample"])) in wanted]


def make_record(
    task: str, problem: Problem, sample: int, seed: int, prompt: Prompt, gen: Generation, specials: tuple[str, ...]
) -> dict[str, Any]:
    text = graded_text(gen.raw_text, specials)
    g = grade(problem, text, truncated=gen.truncated)
    v = validity(gen.raw_text, specials)
    return {
        "task": task,
        "id": problem.id,
        "sample": sample,
        "seed": seed,
        "kind": problem.kind,
        "prompt": prompt,
        "gold": problem.answer,
        "predicted": g.predicted,
        "method": g.method,
        "correct": g.correct,
        "finish_reason": gen.finish_reason,
        "truncated": gen.truncated,
        "generated_tokens": gen.generated_tokens,
        "forced_tokens": gen.forced_tokens,
        "critical_path": gen.critical_path,
        "degree_of_parallelism": gen.degree_of_parallelism,
        "forks": gen.num_forks,
        "fork_proposals": gen.fork_proposals,
        "fork_accepted": gen.fork_accepted,
        "entropies": gen.entropies,
        "fallbacks": list(gen.fallbacks),
        "valid": v.valid,
        "structure_error": v.error,
        "blocks": v.blocks,
        "tree": gen.tree,
        "wall_s": gen.wall_s,
        "raw_text": gen.raw_text,
        "graded_text": text,
    }
