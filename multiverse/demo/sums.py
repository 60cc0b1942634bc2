"""The reproduction task: named sums, solved in parallel when they are independent and in order when they are not.

A problem defines groups of single digits, A = 5+2+8+1, B = 4+9+2, ... and asks for one value:

- independent ("Compute A+B+C+D."): one block, an outline per group, one path per group computing its running
  sum digit by digit, then the total after the block (text both models see). A group written as two bracketed
  halves, C = (5+2+8) + (3+6+4), is computed by a nested block inside its path (one path per half);
- dependent ("Compute C.", where B = A+..., C = B+...): every group starts from the previous result, so no block
  is right; the trace is the same running sums in order.

Digits within a group are distinct, so each step's operand is the digit after the previous one in its group.
Rows use the Multiverse-1K field names the trainer reads; `deepseek_thinking_trajectory` is the sequential twin
(SPEC §8) of the parallel trace, so the autoregressive baseline sees the same reasoning.

Invariant: every trace is canonical, its twin is `sequential_twin(trace)`, and `deepseek_attempt` is the answer.
"""
from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from typing import Any

from multiverse.structure import sequential_twin

Group = tuple[tuple[int, ...], ...]  # one tuple of digits, or two (bracketed halves: a nested block)


@dataclass(frozen=True)
class SumsShape:
    """Sizes drawn per problem (inclusive ranges)."""

    groups: tuple[int, int] = (4, 7)  # groups in an independent problem
    digits: tuple[int, int] = (7, 10)  # digits per group (distinct, 0-9)
    chain: tuple[int, int] = (2, 4)  # groups in a dependent problem
    chain_digits: tuple[int, int] = (3, 6)
    dependent_share: float = 0.2
    nested_share: float = 0.2  # independent problems with one group split into two halves (nested block)


TRAIN = SumsShape()
# Held out: one more group (and one more chain link) than training ever shows, besides the training sizes.
HELD_OUT = SumsShape(groups=(4, 8), digits=(7, 10), chain=(2, 5))


@dataclass(frozen=True)
class Problem:
    question: str
    trace: str  # the canonical Multiverse trace (no <Think>; the trainer wraps it)
    answer: int
    dependent: bool


def running_sum(digits: tuple[int, ...], start: int | None = None) -> tuple[str, int]:
    """'5+2=7+8=15' (each '+d=' adds the next digit to the running total) or, from a previous result 15,
    '15+3=18+1=19'; and the final value."""
    total = digits[0] if start is None else start
    text = str(total)
    for d in digits[1:] if start is None else digits:
        total += d
        text += f"+{d}={total}"
    return text, total


def _group_text(group: Group) -> str:
    if len(group) == 1:
        return "+".join(map(str, group[0]))
    return " + ".join("(" + "+".join(map(str, half)) + ")" for half in group)


def _path_body(name: str, label: str, group: Group) -> tuple[str, int]:
    """What path `label` computes for group `name`: its running sum, or a nested block over its two halves."""
    if len(group) == 1:
        steps, value = running_sum(group[0])
        return f"{name}: {steps}, so {name}={value}.", value
    halves = [running_sum(h) for h in group]
    outlines = "".join(f"<Outline>{label}.{i}: {side}</Outline>" for i, side in ((1, "left"), (2, "right")))
    paths = "".join(f"<Path>{label}.{i}: {s}, so {v}.</Path>" for i, (s, v) in enumerate(halves, 1))
    value = halves[0][1] + halves[1][1]
    block = f"<Parallel><Goal>{outlines}</Goal>{paths}<Conclusion></Conclusion></Parallel>"
    return f"{name}: {block} {halves[0][1]}+{halves[1][1]}={value}, so {name}={value}.", value


def independent(groups: list[Group]) -> Problem:
    names = string.ascii_uppercase[: len(groups)]
    defs = ", ".join(f"{n} = {_group_text(g)}" for n, g in zip(names, groups))
    question = f"Let {defs}. Compute {'+'.join(names)}."
    bodies = [_path_body(n, str(i), g) for i, (n, g) in enumerate(zip(names, groups), 1)]
    outlines = "".join(f"<Outline>{i}: {n}</Outline>" for i, n in enumerate(names, 1))
    paths = "".join(f"<Path>{i}: {body}</Path>" for i, (body, _) in enumerate(bodies, 1))
    values = [v for _, v in bodies]
    steps, total = running_sum(tuple(values))
    trace = f"<Parallel><Goal>{outlines}</Goal>{paths}<Conclusion></Conclusion></Parallel>Total: {steps}."
    return Problem(question, trace, total, dependent=False)


def dependent(groups: list[tuple[int, ...]]) -> Problem:
    names = string.ascii_uppercase[: len(groups)]
    defs = [f"A = {'+'.join(map(str, groups[0]))}"]
    defs += [f"{n} = {p}+{'+'.join(map(str, g))}" for p, n, g in zip(names, names[1:], groups[1:])]
    question = f"Let {', '.join(defs)}. Compute {names[-1]}."
    lines, value = [], None
    for n, g in zip(names, groups):
        steps, value = running_sum(g, value)
        lines.append(f"{n}: {steps}, so {n}={value}.")
    return Problem(question, "\n".join(lines), value, dependent=True)  # type: ignore[arg-type]


def _digits(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.sample(range(10), n))


def sample_problem(rng: random.Random, shape: SumsShape = TRAIN) -> Problem:
    if rng.random() < shape.dependent_share:
        return dependent([_digits(rng, rng.randint(*shape.chain_digits)) for _ in range(rng.randint(*shape.chain))])
    groups: list[Group] = [(_digits(rng, rng.randint(*shape.digits)),) for _ in range(rng.randint(*shape.groups))]
    if rng.random() < shape.nested_share:
        i, n = rng.randrange(len(groups)), rng.randint(*shape.digits)
        digits = _digits(rng, n)
        cut = rng.randint(3, n - 3)
        groups[i] = (digits[:cut], digits[cut:])
    return independent(groups)


def to_row(p: Problem) -> dict[str, Any]:
    return {
        "question": p.question,
        "deepseek_thinking_trajectory_parallel": p.trace,
        "deepseek_thinking_trajectory": sequential_twin(p.trace),
        "deepseek_attempt": str(p.answer),
        "dependent": p.dependent,
    }


def make_rows(n: int, seed: int, shape: SumsShape = TRAIN, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """n distinct rows from `seed`; questions in `exclude` (another split) are skipped."""
    rng, seen, rows = random.Random(seed), set(exclude or ()), []
    while len(rows) < n:
        p = sample_problem(rng, shape)
        if p.question not in seen:
            seen.add(p.question)
            rows.append(to_row(p))
    return rows


def write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
