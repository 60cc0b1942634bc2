"""Toy Multiverse data a tiny model learns on CPU in minutes: independent sums solved as parallel paths.

A question lists 2-4 additions; the trace opens one block whose outlines name the additions, one path per
addition computes it, and the conclusion collects the sums. Rows use the Multiverse-1K field names, so the
trainer reads them as they are; `deepseek_thinking_trajectory` holds the sequential twin for the baseline.

Invariant: every parallel trace is canonical and its twin holds every computed sum.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from multiverse.structure import sequential_twin


@dataclass(frozen=True)
class ToyShape:
    min_terms: int = 2
    max_terms: int = 4
    max_operand: int = 49


def toy_question(rng: random.Random, shape: ToyShape = ToyShape()) -> tuple[str, list[tuple[int, int]]]:
    n = rng.randint(shape.min_terms, shape.max_terms)
    pairs = [(rng.randint(0, shape.max_operand), rng.randint(0, shape.max_operand)) for _ in range(n)]
    return "Add each pair: " + ", ".join(f"{a}+{b}" for a, b in pairs) + ".", pairs


def column_sum(a: int, b: int) -> str:
    """The addition written digit by digit with its carry (what a path computes)."""
    ones = a % 10 + b % 10
    tens = a // 10 + b // 10 + ones // 10
    return f"{a}+{b}: ones {a % 10}+{b % 10} = {ones}, tens {a // 10}+{b // 10}+{ones // 10} = {tens}, so {a}+{b} = {a + b}"


def toy_trace(pairs: list[tuple[int, int]]) -> str:
    outlines = "".join(f"<Outline>{i}: {a}+{b}</Outline>" for i, (a, b) in enumerate(pairs, 1))
    paths = "".join(f"<Path>{i}: {column_sum(a, b)}</Path>" for i, (a, b) in enumerate(pairs, 1))
    sums = ", ".join(f"{a}+{b} = {a + b}" for a, b in pairs)
    return (
        f"<Parallel><Goal>One path per pair.{outlines}</Goal>{paths}"
        f"<Conclusion>So {sums}.</Conclusion></Parallel>"
    )


def toy_row(rng: random.Random, shape: ToyShape = ToyShape()) -> dict[str, Any]:
    question, pairs = toy_question(rng, shape)
    trace = toy_trace(pairs)
    return {
        "question": question,
        "deepseek_thinking_trajectory_parallel": trace,
        "deepseek_thinking_trajectory": sequential_twin(trace),
        "deepseek_attempt": ", ".join(str(a + b) for a, b in pairs),
    }


def write_toy_jsonl(path: str, rows: int, seed: int = 0, shape: ToyShape = ToyShape()) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    data = [toy_row(rng, shape) for _ in range(rows)]
    with open(path, "w", encoding="utf-8") as f:
        for row in data:
            f.write(json.dumps(row) + "\n")
    return data


def toy_corpus(rows: int = 400, seed: int = 1) -> list[str]:
    """Text to train the demo tokenizer on (questions, traces, answers)."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(rows):
        row = toy_row(rng)
        out += [row["question"], row["deepseek_thinking_trajectory"], row["deepseek_attempt"]]
    return out
