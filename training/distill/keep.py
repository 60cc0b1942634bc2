"""The kept rows of a round: per question, among its correct and structurally valid completions, the one with
the shortest critical path (then the fewest generated tokens, then the lowest sample index), as a Multiverse-1K
row the SFT trainer reads, with its provenance.

    {"question", "deepseek_thinking_trajectory_parallel": "<Think>...</Think>", "deepseek_attempt",
     "dependent", "provenance": {"round", "sample", "seed", "critical_path", "generated_tokens", "parallelism",
                                 "forks", "candidates", "model"}}
A question none of whose completions is both correct and valid gives no row.
"""
from __future__ import annotations

from typing import Any, Sequence

from training.judge import Verdict
from training.rollouts import Rollout


def split_answer(text: str, answer_prefix: str) -> tuple[str, str]:
    """(trace, attempt) of a valid completion's text (it holds the answer prefix exactly once)."""
    trace, attempt = text.split(answer_prefix)
    return trace.strip(), attempt.strip()


def best(candidates: Sequence[Rollout]) -> Rollout:
    return min(candidates, key=lambda r: (r.critical_path, r.generated_tokens, r.sample))


def kept_rows(groups: Sequence[Sequence[Rollout]], verdicts: Sequence[Sequence[Verdict]], round_: int, model: str,
              answer_prefix: str) -> list[dict[str, Any]]:
    """One row per question that has a correct, valid completion (groups and verdicts aligned)."""
    rows = []
    for group, judged in zip(groups, verdicts):
        good = [r for r, v in zip(group, judged) if v.correct and v.valid]
        if not good:
            continue
        r = best(good)
        trace, attempt = split_answer(r.text, answer_prefix)
        forkable = r.question.forkable
        rows.append({
            "question": r.question.problem.question,
            "deepseek_thinking_trajectory_parallel": trace,
            "deepseek_attempt": attempt,
            "dependent": None if forkable is None else not forkable,
            "provenance": {"round": round_, "sample": r.sample, "seed": r.seed, "critical_path": r.critical_path,
                           "generated_tokens": r.generated_tokens, "parallelism": round(r.parallelism, 4),
                           "forks": r.forks, "candidates": len(good), "model": model},
        })
    return rows
