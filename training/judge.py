"""Judging a rollout: correct (the evaluation's grader), structurally valid, and its reward parts.

    correct      multiverse.evaluation.grading.is_correct on the text (the grader `multiverse eval` uses), and,
                 with `steps: remainders`, every step true (multiverse/demo/verify.py: no answer right by luck)
    valid        the decoding stopped by itself (finish "stop"), no block fell back to sequential decoding
                 (SPEC §6), the text parses as Multiverse structure, and it holds exactly one answer line
    reward       correct * w_correct                                          (correctness)
               + correct * min(w_accel * (1 - critical_path / generated), clip)  (P-GRPO's acceleration bonus)
               + valid * w_format                                             (format)

1 - critical_path / generated is the share of the work that ran beside the longest path: 0 for a sequential
answer, 1 - 1/p at degree of parallelism p. The bonus goes to correct answers only, so a wrong fast answer is
never worth more than a right slow one while clip < w_correct.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from multiverse.evaluation.grading import is_correct
from multiverse.structure import StructureError, parse
from training.rollouts import Rollout


@dataclass(frozen=True)
class RewardConfig:
    correct: float = 1.0  # reward of a correct answer
    acceleration: float = 1.0  # weight of the acceleration (1 - critical path / generated tokens); 0 turns it off
    acceleration_clip: float = 0.5  # the bonus never exceeds this
    format: float = 0.1  # reward of a structurally valid answer
    answer_prefix: str = "\n\nAnswer: "  # the line a valid answer holds exactly once
    steps: str = "none"  # none: the final answer decides | remainders: every subtraction and stated value true too


@dataclass(frozen=True)
class Verdict:
    correct: bool
    valid: bool
    why: str  # "" when valid, else the first reason it is not
    predicted: str | None
    steps: str = ""  # with a step check: why the reasoning is false ("" when true or unchecked)


@dataclass(frozen=True)
class Reward:
    correct: float
    acceleration: float
    format: float

    @property
    def total(self) -> float:
        return self.correct + self.acceleration + self.format


def structure_problem(r: Rollout, answer_prefix: str) -> str:
    """Why a rollout is not structurally valid ("" when it is)."""
    if r.finish_reason != "stop":
        return f"finish {r.finish_reason}"
    if r.fallbacks:
        return f"fallback {r.fallbacks[0]}"
    if r.text.count(answer_prefix) != 1:
        return f"{r.text.count(answer_prefix)} answer lines"
    try:
        parse(r.text)
    except StructureError as e:
        return f"structure: {e}"
    return ""


def step_check(name: str) -> Callable[[str, str], str] | None:
    """reward.steps -> (question, text) -> why the steps are false ("" when true); None for "none"."""
    if name == "none":
        return None
    if name == "remainders":
        from multiverse.demo.verify import steps_problem

        return steps_problem
    raise ValueError(f"reward.steps must be none or remainders, got {name!r}")


def judge(r: Rollout, cfg: RewardConfig = RewardConfig()) -> Verdict:
    correct, predicted = is_correct(r.question.problem, r.text)
    why = structure_problem(r, cfg.answer_prefix)
    check = step_check(cfg.steps)
    steps = check(r.question.problem.question, r.text) if check is not None and correct else ""
    return Verdict(bool(correct) and not steps, not why, why, predicted, steps)


def acceleration(r: Rollout) -> float:
    """1 - critical path / generated tokens, in [0, 1)."""
    if r.generated_tokens <= 0:
        return 0.0
    return max(0.0, 1.0 - r.critical_path / r.generated_tokens)


def reward(r: Rollout, v: Verdict, cfg: RewardConfig) -> Reward:
    bonus = min(cfg.acceleration * acceleration(r), cfg.acceleration_clip) if v.correct else 0.0
    return Reward(cfg.correct * v.correct, bonus, cfg.format * v.valid)
