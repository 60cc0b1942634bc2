"""Sampled completions for learning from the model itself (self-distillation and RL), through the Backend seam.

    questions (a jsonl task file) -> chat prompts -> backend.generate(K per question, one seed each) -> Rollouts

Every rollout carries what both learners need: the prompt and generated ids in the engine's final merged order,
the engine's log-probability of every sampled token (None where the engine forced the token: `<Path> LABEL:`,
`<Conclusion>`; those are not actions), the text, and the SPEC §7 counts of the engine's stats. Seeds come from
(run seed, round or step, question, sample) through sha256, so a rollout does not depend on batching, on which
process draws it or on a resume. The backend is any engine/backend.py Backend: the native engine around the
model being trained, or a SGLang client (training/README.md, "Rollouts at scale").
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from multiverse.evaluation.tasks import Problem, load_file


@dataclass(frozen=True)
class Question:
    problem: Problem  # id, question, gold answer, kind (what the evaluation's grader reads)
    index: int  # row of the task file (0-based): part of every seed
    forkable: bool | None  # the row's `dependent` field negated; None when the file has none


@dataclass(frozen=True)
class TaskConfig:
    """Questions with gold answers: a local jsonl (e.g. runs/wide/finetune.jsonl)."""

    tasks: str = ""
    question: str = "question"  # column names
    answer: str = "deepseek_attempt"
    kind: str = "word"  # the grader's kind: word | math | choice
    limit: int | None = None  # first N rows only


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are drawn (typed; a section of the distill and RL configs)."""

    samples: int = 4  # K completions per question (the group of GRPO)
    temperature: float = 1.0  # 1.0: the policy itself (the engine's log-probs are of the unmodified distribution)
    top_p: float = 1.0
    max_new_tokens: int = 1024
    suffix: str = ""  # appended to each question (the remainders models are trained on the question alone)
    system_prompt: str | None = None
    fork_bias: float = 0.0  # added to the <Parallel> logit (engine/controls.py): self-distillation may draw more
    # forked candidates from an under-parallel model and let grading keep the right ones; RL refuses it (off-policy)


@dataclass(frozen=True)
class Rollout:
    question: Question
    sample: int  # 0..K-1 within its group
    seed: int
    prompt_ids: list[int]
    token_ids: list[int]  # generated ids, final merged order (prefix, path 1, ..., path n, conclusion, ...)
    logprobs: list[float | None]  # aligned with token_ids; None at forced tokens
    text: str  # generated text, special tokens dropped (structure tags kept)
    finish_reason: str
    generated_tokens: int  # sampled tokens of every branch (SPEC §7)
    critical_path: int
    parallelism: float  # generated tokens / critical path
    forks: int
    fallbacks: tuple[str, ...]

    @property
    def actions(self) -> list[bool]:
        """True where the model chose the token (it has a log-prob), False where the engine forced it."""
        return [lp is not None for lp in self.logprobs]


def check_sources(model_path: str, data: TaskConfig, role: str) -> None:
    """The model a stage samples from and its questions file are named (ConfigError naming the key otherwise)."""
    from multiverse.config_io import ConfigError

    if not model_path:
        raise ConfigError(f"model.name_or_path is required (the model {role})", "model")
    if not data.tasks:
        raise ConfigError("data.tasks must name a jsonl file of questions with answers", "data.tasks")


def rollout_seed(*keys: Any) -> int:
    """A 31-bit seed from the keys (run seed, round/step, question index, sample), stable across processes."""
    digest = hashlib.sha256(":".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def load_questions(cfg: TaskConfig) -> list[Question]:
    """The rows of a jsonl task file (the grader's Problems) with their forkability (`dependent`, when present)."""
    problems = load_file(cfg.tasks, {"question": cfg.question, "answer": cfg.answer}, cfg.kind, cfg.limit)
    lines = [json.loads(x) for x in Path(cfg.tasks).read_text(encoding="utf-8").splitlines() if x.strip()]
    flags = [None if "dependent" not in r else not r["dependent"] for r in lines]
    return [Question(p, i, flags[i] if i < len(flags) else None) for i, p in enumerate(problems)]


def prompt_of(question: Question, cfg: SamplingConfig) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt is not None else []
    return messages + [{"role": "user", "content": question.problem.question + cfg.suffix}]


def sample(backend: Any, questions: Sequence[Question], cfg: SamplingConfig, *seed_keys: Any) -> list[list[Rollout]]:
    """K rollouts per question (one group each, in question order), all in one batched generate call.
    Seeds: rollout_seed(*seed_keys, question.index, k)."""
    from engine.params import SamplingParams

    prompts, params, keys = [], [], []
    for q in questions:
        for k in range(cfg.samples):
            seed = rollout_seed(*seed_keys, q.index, k)
            prompts.append(prompt_of(q, cfg))
            params.append(SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
                                         max_new_tokens=cfg.max_new_tokens, logprobs=True, fork_bias=cfg.fork_bias))
            keys.append((q, k, seed))
    outs = backend.generate(prompts, params)
    rollouts = [_rollout(q, k, seed, out) for (q, k, seed), out in zip(keys, outs)]
    return [rollouts[i: i + cfg.samples] for i in range(0, len(rollouts), cfg.samples)]


def _rollout(q: Question, k: int, seed: int, out: Any) -> Rollout:
    s = out.stats
    if out.logprobs is None or len(out.logprobs) != len(out.token_ids):
        raise ValueError(f"the backend gave no log-probs aligned with the tokens of question {q.index} sample {k}")
    return Rollout(q, k, seed, list(out.prompt_token_ids), list(out.token_ids), list(out.logprobs), out.text,
                   out.finish_reason, s.generated_tokens, s.critical_path, s.degree_of_parallelism, s.num_forks,
                   tuple(s.fallbacks))
