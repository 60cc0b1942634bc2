"""`--dry-run`: calls, tokens and cost of a run estimated from the inputs, without sending a request.

Exact: the steps prompt of every sample (the whole numbered trace) and the template parts of the other
prompts, counted with the statistics tokenizer (characters / 4 when it is the built-in tiny one or none).
Assumed (the replies decide them): a main step per STEP_SENTENCES sentences, a block per BLOCK_STEPS main
steps, reply sizes below. Regenerations are not counted; `calls_upper_bound` multiplies by run.max_attempts.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from data_pipeline.config import CurateConfig
from data_pipeline.sample import Sample
from data_pipeline.prompts import Prompt
from data_pipeline.sentences import numbered, split_sentences

STEP_SENTENCES = 8  # sentences per main step
BLOCK_STEPS = 3  # main steps per parallel block
STEP_REPLY = 30  # completion tokens per step in the steps reply
DEPENDENCY_REPLY = 12  # per step in the dependencies reply
BLOCK_REPLY = 80  # goal, outlines and conclusion of one block
REWRITTEN = 0.05  # share of a block's tokens that come back as rewrites


def counter(tokenizer: Any | None) -> Callable[[str], int]:
    if tokenizer is None:
        return lambda text: math.ceil(len(text) / 4)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def estimate(samples: list[Sample], prompts: dict[str, Prompt], cfg: CurateConfig,
             count: Callable[[str], int]) -> dict[str, Any]:
    calls = prompt = completion = 0
    for s in samples:
        sentences = split_sentences(s.trace)
        steps = max(1, math.ceil(len(sentences) / STEP_SENTENCES))
        blocks = max(1, steps // BLOCK_STEPS)
        trace = count(s.trace)
        question = count(s.question)
        prompt += _tokens(prompts["steps"].messages(question=s.question, count=str(len(sentences)),
                                                    sentences=numbered(sentences)), count)
        prompt += _tokens(prompts["dependencies"].messages(question="", steps=""), count) + question + 25 * steps
        prompt += blocks * (_tokens(prompts["rewrite"].messages(question="", context="", count="", paths=""), count)
                            + question) + trace
        completion += STEP_REPLY * steps + DEPENDENCY_REPLY * steps + BLOCK_REPLY * blocks + int(REWRITTEN * trace)
        calls += 2 + blocks
    out: dict[str, Any] = {
        "dry_run": True, "samples": len(samples), "calls": calls,
        "calls_upper_bound": calls * cfg.run.max_attempts, "prompt_tokens": prompt, "completion_tokens": completion,
        "assumptions": {"sentences_per_step": STEP_SENTENCES, "steps_per_block": BLOCK_STEPS,
                        "regenerations": "not counted"},
    }
    out["cost"] = cost(prompt, completion, cfg)
    return out


def cost(prompt_tokens: int, completion_tokens: int, cfg: CurateConfig) -> float | None:
    """In the prices' currency; None without llm.prompt_price / llm.completion_price."""
    if cfg.llm.prompt_price is None and cfg.llm.completion_price is None:
        return None
    return round((prompt_tokens * (cfg.llm.prompt_price or 0.0)
                  + completion_tokens * (cfg.llm.completion_price or 0.0)) / 1e6, 4)


def _tokens(messages: list[dict[str, str]], count: Callable[[str], int]) -> int:
    return sum(count(m["content"]) for m in messages)
