"""Run a backend over (task, question, sample) jobs; each finished sample is graded and appended at once.

Jobs already in the record file are skipped (resume). Seeds come from (base seed, task, id, sample), so a
resumed run, a run with more tasks and a run in another order all give each sample the same seed. Requests flow
continuously: the backend keeps up to `batch_size` (native) or `--concurrency` (openai) of them in flight and
starts the next the moment one finishes, so a slow request holds up nothing but itself.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from multiverse.errors import CommandError, UsageError
from multiverse.evaluation.analysis import validity
from multiverse.evaluation.backends.base import Backend, Decoding, Generation, Prompt
from multiverse.evaluation.context import fit
from multiverse.evaluation.grading import grade, graded_text, special_tokens
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.records import RecordFile, sample_seed
from multiverse.evaluation.tasks import Problem

Job = tuple[str, Problem, int]  # (task, problem, sample index)
Warn = Callable[[str], None]


def build_prompt(problem: Problem, config: EvalConfig, tokenizer: Any) -> Prompt:
    """The question with its suffix (the protocol's, else the task's own, else the protocol's fallback), as chat
    messages (a system message first when the protocol has one) or, without a chat template, plain text."""
    suffix = next(s for s in (config.suffix, problem.suffix, config.fallback_suffix) if s is not None)
    text = f"{problem.question} {suffix}".strip() if suffix else problem.question
    if config.chat and getattr(tokenizer, "chat_template", None):
        system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
        return [*system, {"role": "user", "content": text}]
    return f"{config.system_prompt}\n\n{text}" if config.system_prompt else text


def prompt_text(prompt: Prompt, tokenizer: Any) -> str:
    """The text the model reads: a plain prompt as is, messages through the tokenizer's chat template."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def prompt_tokens(prompt: Prompt, text: str, tokenizer: Any) -> int:
    return len(tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"])


def decoding(config: EvalConfig, seed: int) -> Decoding:
    return Decoding(config.max_new_tokens, config.max_critical_tokens, config.temperature, config.top_p, seed,
                    dict(config.controls))


def jobs_of(problems: Sequence[tuple[str, Problem]], samples: int) -> list[Job]:
    return [(task, p, s) for task, p in problems for s in range(samples)]


def _stderr(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)


def prepare(backend: Backend, jobs: Sequence[Job], config: EvalConfig, warn: Warn = _stderr) -> list[tuple[Prompt, str, Decoding]]:
    """(prompt, its text, its decoding fitted into the context) of each job. A prompt the context cannot hold
    is refused here, before any request runs. Every budget is capped to the positions its prompt leaves (the record
    keeps the budget used); a budget past the context itself (the paper's 32,768 on a 4,096 model) is warned of."""
    context = backend.context
    out, capped, too_long = [], [], []
    seen: dict[tuple[str, str], tuple[Prompt, str, int]] = {}  # samples of one question share their prompt
    for task, problem, sample in jobs:
        if (task, problem.id) not in seen:
            prompt = build_prompt(problem, config, backend.tokenizer)
            try:
                text = prompt_text(prompt, backend.tokenizer)
            except Exception as err:  # noqa: BLE001 - templates raise anything (jinja's TemplateError on roles)
                hint = " (--system-prompt: this template may not take a system message)" if config.system_prompt else ""
                raise CommandError(f"{task}/{problem.id}: the chat template refused the prompt{hint}: {err}") from err
            seen[task, problem.id] = prompt, text, prompt_tokens(prompt, text, backend.tokenizer)
        prompt, text, n = seen[task, problem.id]
        dec = decoding(config, sample_seed(config.seed, task, problem.id, sample))
        room = context.room(n)
        if room is not None and room < 1:
            too_long.append(f"{task}/{problem.id} ({n} tokens)")
            continue
        fitted = fit(dec, n, context, cap_total=getattr(backend, "caps_total", False))
        if fitted != dec:
            capped.append((f"{task}/{problem.id}", n, fitted))
        out.append((prompt, text, fitted))
    if too_long:
        raise UsageError(f"{len(too_long)} prompt(s) do not fit the model's context of {context.length} tokens "
                         f"({context.source}): {', '.join(sorted(set(too_long))[:5])}")
    asked = config.max_critical_tokens if config.max_critical_tokens is not None else config.max_new_tokens
    if capped and context.length is not None and asked > context.length:  # a budget past the context itself
        where, n, d = capped[0]
        warn(f"the budget ({asked} positions) does not fit the model's context of {context.length} tokens "
             f"({context.source}): capped to the room each prompt leaves in {len(capped)} of {len(jobs)} requests "
             f"(e.g. {where}: {n}-token prompt, critical budget {d.max_critical_tokens})")
    return out


def run_samples(
    backend: Backend,
    problems: Sequence[tuple[str, Problem]],
    config: EvalConfig,
    records: RecordFile,
    desc: str = "eval",
    progress: bool = True,
    warn: Warn = _stderr,
) -> list[dict[str, Any]]:
    """Generate and grade every job not yet in `records`; returns all records of these jobs (old and new)."""
    jobs = jobs_of(problems, config.samples)
    todo = [j for j in jobs if (j[0], j[1].id, j[2]) not in records.done]
    ready = prepare(backend, todo, config, warn)  # refusals happen before any request runs
    specials = special_tokens(backend.tokenizer)
    tasks = {t for t, _ in problems}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="gen", disable=not progress)
    prompts, decodings = [r[0] for r in ready], [r[2] for r in ready]
    for i, gen in backend.generate(prompts, decodings, config.batch_size):
        task, problem, sample = todo[i]
        records.append({**make_record(task, problem, sample, decodings[i].seed, prompts[i], gen, specials,
                                      ready[i][1], decodings[i]), "controls": dict(config.controls)})
        bar.update(1)
        mine = [r for r in records.records if r["task"] in tasks]
        bar.set_postfix(acc=f"{sum(r['correct'] for r in mine) / max(1, len(mine)):.3f}")
    bar.close()
    wanted = {(t, p.id, s) for t, p, s in jobs}
    return [r for r in records.records if (r["task"], r["id"], int(r["sample"])) in wanted]


def make_record(
    task: str, problem: Problem, sample: int, seed: int, prompt: Prompt, gen: Generation, specials: tuple[str, ...],
    text_of_prompt: str | None = None, dec: Decoding | None = None,
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
        "prompt_text": text_of_prompt,  # the chat template as applied (what the model reads)
        "budget": None if dec is None else {"max_new_tokens": dec.max_new_tokens, "max_critical_tokens": dec.max_critical_tokens},
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
