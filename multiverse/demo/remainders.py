"""The reproduction task: remainders by repeated subtraction, in parallel when they are independent, in order when not.

A problem defines named remainders, all by one divisor, A = 89 mod 5, B = 47 mod 5, ... and asks for one value:

- independent ("Compute A+B+C."): one block, an outline per name, one path per name that restates its definition
  and subtracts the divisor until less than it is left (A = 89 mod 5: 89-5=84-5=79-...=4, so A=4.), then the total
  after the block, adding the values by name (text both models see). A name defined as two bracketed remainders,
  C = (47 mod 5)+(35 mod 5), is computed by a nested block inside its path (one path per remainder) and added;
- dependent ("Compute C.", where B = (A+50) mod 5, C = (B+60) mod 5, round offsets): each name needs the previous
  value, so no block is right; the trace computes them in order.

Every step reads only what its own path wrote a few tokens before (the previous difference, the divisor after the
previous "-"), so the work is local and the paths are long next to the shared outline and total: that is where
the critical path gets shorter than the sequential text.
Rows use the Multiverse-1K field names the trainer reads; `deepseek_thinking_trajectory` is the sequential twin
(SPEC §8) of the parallel trace, so the autoregressive baseline sees the same reasoning.
Splits: `train_rows()` (seed 0), `held_out_rows()` (seed 1, questions of the training split excluded) and
`fine_tune_rows()` (seed 2, more nested problems, held-out questions excluded).

Invariant: every trace is canonical, its twin is `sequential_twin(trace)`, every step is true, and
`deepseek_attempt` is the answer.
"""
from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from typing import Any

from multiverse.structure import sequential_twin

Mod = tuple[int, int]  # (dividend, divisor)
Group = tuple[Mod, ...]  # one remainder, or two added (a nested block)


@dataclass(frozen=True)
class Shape:
    """Sizes drawn per problem (inclusive ranges)."""

    names: tuple[int, int] = (4, 6)  # names in an independent problem
    steps: tuple[int, int] = (10, 16)  # subtractions per remainder
    divisor: tuple[int, int] = (3, 6)
    chain: tuple[int, int] = (2, 4)  # names in a dependent problem
    dependent_share: float = 0.2
    nested_share: float = 0.2  # independent problems with nested names (each the sum of two remainders: a nested block)
    dividend: tuple[int, int] = (0, 99)  # a dividend outside is drawn again
    nested_names: tuple[int, int] = (1, 1)  # names written as a nested sum in a problem that has any


TRAIN = Shape()
# Fine-tuning rows (a fresh draw after the base's): half the independent problems nested. At "C =" a nested path
# must copy the question's " (" where every other path writes " ", the one choice the rest of the task never trains.
FINE_TUNE = Shape(nested_share=0.5)
# Held out: longer paths than training ever shows (up to 18 subtractions, for divisors up to 5), besides the
# training sizes.
HELD_OUT = Shape(steps=(10, 18))


@dataclass(frozen=True)
class Problem:
    question: str
    trace: str  # the canonical Multiverse trace (no <Think>; the trainer wraps it)
    answer: int
    dependent: bool


def subtractions(dividend: int, divisor: int) -> tuple[str, int]:
    """'89-9=80-9=71-...-9=8' (subtract until less than the divisor is left) and the remainder."""
    value, text = dividend, str(dividend)
    while value >= divisor:
        value -= divisor
        text += f"-{divisor}={value}"
    return text, value


def _mod_text(m: Mod) -> str:
    return f"{m[0]} mod {m[1]}"


def _group_text(group: Group) -> str:
    return _mod_text(group[0]) if len(group) == 1 else "+".join(f"({_mod_text(m)})" for m in group)


def _path_body(name: str, label: str, group: Group) -> tuple[str, int]:
    """What path `label` computes for `name`: its subtractions, or a nested block over its two remainders."""
    if len(group) == 1:
        steps, value = subtractions(*group[0])
        return f"{name} = {_mod_text(group[0])}: {steps}, so {name}={value}.", value
    parts = [subtractions(*m) for m in group]
    outlines = "".join(f"<Outline>{label}.{i}: {_mod_text(m)}</Outline>" for i, m in enumerate(group, 1))
    paths = "".join(f"<Path>{label}.{i}: {_mod_text(m)}: {s}, so {v}.</Path>" for i, (m, (s, v)) in enumerate(zip(group, parts), 1))
    value = parts[0][1] + parts[1][1]
    block = f"<Parallel><Goal>{outlines}</Goal>{paths}<Conclusion></Conclusion></Parallel>"
    return f"{name} = {_group_text(group)}: {block} {parts[0][1]}+{parts[1][1]}={value}, so {name}={value}.", value


def total_text(names: str, values: list[int]) -> tuple[str, int]:
    """'A=8 B=5:13 C=3:16' (each name's value by name, then the running total) and the total."""
    total, parts = values[0], [f"{names[0]}={values[0]}"]
    for name, value in zip(names[1:], values[1:]):
        total += value
        parts.append(f"{name}={value}:{total}")
    return " ".join(parts), total


def independent(groups: list[Group]) -> Problem:
    names = string.ascii_uppercase[: len(groups)]
    defs = ", ".join(f"{n} = {_group_text(g)}" for n, g in zip(names, groups))
    question = f"Let {defs}. Compute {'+'.join(names)}."
    bodies = [_path_body(n, str(i), g) for i, (n, g) in enumerate(zip(names, groups), 1)]
    outlines = "".join(f"<Outline>{i}: {n}</Outline>" for i, n in enumerate(names, 1))
    paths = "".join(f"<Path>{i}: {body}</Path>" for i, (body, _) in enumerate(bodies, 1))
    total, answer = total_text(names, [v for _, v in bodies])
    trace = f"<Parallel><Goal>{outlines}</Goal>{paths}<Conclusion></Conclusion></Parallel>Total: {total}."
    return Problem(question, trace, answer, dependent=False)


def dependent(first: Mod, links: list[Mod]) -> Problem:
    """A = first; each link (offset, divisor) defines the next name as (previous + offset) mod divisor."""
    names = string.ascii_uppercase[: len(links) + 1]
    defs = [f"A = {_mod_text(first)}"]
    defs += [f"{n} = ({p}+{o}) mod {d}" for p, n, (o, d) in zip(names, names[1:], links)]
    question = f"Let {', '.join(defs)}. Compute {names[-1]}."
    steps, value = subtractions(*first)
    lines = [f"A = {_mod_text(first)}: {steps}, so A={value}."]
    for n, (o, d) in zip(names[1:], links):
        start = value + o
        text = f"{n} = ({value}+{o}) mod {d} = {start} mod {d}"
        steps, value = subtractions(start, d)
        lines.append(f"{text}: {steps}, so {n}={value}.")
    return Problem(question, "\n".join(lines), value, dependent=True)


def _mod(rng: random.Random, shape: Shape, divisor: int) -> Mod:
    """A dividend in `shape.dividend` (default: at most two digits; divisor 6 with 16 steps passes 99 and is drawn
    again)."""
    low, high = shape.dividend
    if divisor * shape.steps[0] > high or divisor * shape.steps[1] + divisor - 1 < low:  # fail, not draw forever
        raise ValueError(f"Shape.steps {shape.steps} with divisor {divisor}: no dividend in {low}..{high}")
    while True:
        dividend = divisor * rng.randint(*shape.steps) + rng.randrange(divisor)
        if low <= dividend <= high:
            return dividend, divisor


def _link(rng: random.Random, shape: Shape, divisor: int) -> Mod:
    """(offset, divisor): a round offset, so that previous value (< divisor) + offset takes `steps` subtractions
    and stays within the largest dividend (9 tens at most for two digits)."""
    low, high = -(-divisor * shape.steps[0] // 10), divisor * shape.steps[1] // 10
    tens = (shape.dividend[1] - divisor + 1) // 10
    first = max(1, low)
    return 10 * rng.randint(first, max(first, min(tens, max(low, high)))), divisor


def sample_problem(rng: random.Random, shape: Shape = TRAIN) -> Problem:
    """One problem; all its remainders share one divisor."""
    divisor = rng.randint(*shape.divisor)
    if rng.random() < shape.dependent_share:
        links = [_link(rng, shape, divisor) for _ in range(rng.randint(*shape.chain) - 1)]
        return dependent(_mod(rng, shape, divisor), links)
    groups: list[Group] = [(_mod(rng, shape, divisor),) for _ in range(rng.randint(*shape.names))]
    if rng.random() < shape.nested_share:
        _nest(rng, shape, divisor, groups)
    return independent(groups)


def _nest(rng: random.Random, shape: Shape, divisor: int, groups: list[Group]) -> None:
    """Make some names nested sums. A shape nesting exactly one keeps the default splits' draws in their order
    (both remainders, then the place: the right side of an assignment is evaluated first)."""
    if shape.nested_names == (1, 1):
        groups[rng.randrange(len(groups))] = (_mod(rng, shape, divisor), _mod(rng, shape, divisor))
        return
    for i in rng.sample(range(len(groups)), min(len(groups), rng.randint(*shape.nested_names))):
        groups[i] = (_mod(rng, shape, divisor), _mod(rng, shape, divisor))


def to_row(p: Problem) -> dict[str, Any]:
    return {
        "question": p.question,
        "deepseek_thinking_trajectory_parallel": p.trace,
        "deepseek_thinking_trajectory": sequential_twin(p.trace),
        "deepseek_attempt": str(p.answer),
        "dependent": p.dependent,
    }


def make_rows(n: int, seed: int, shape: Shape = TRAIN, exclude: set[str] | None = None) -> list[dict[str, Any]]:
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


TRAIN_ROWS, TRAIN_SEED, HELD_OUT_SEED, FINE_TUNE_SEED = 12000, 0, 1, 2


def train_rows(n: int = TRAIN_ROWS) -> list[dict[str, Any]]:
    return make_rows(n, seed=TRAIN_SEED, shape=TRAIN)


def held_out_rows(n: int, train_questions: set[str] | None = None) -> list[dict[str, Any]]:
    """The first n held-out rows (a prefix of any longer held-out split), none of whose questions is a training
    question (default: those of `train_rows()`)."""
    if train_questions is None:
        train_questions = {r["question"] for r in train_rows()}
    return make_rows(n, seed=HELD_OUT_SEED, shape=HELD_OUT, exclude=train_questions)


def fine_tune_rows(n: int, held_out_questions: set[str]) -> list[dict[str, Any]]:
    """n rows (seed 2, `FINE_TUNE` shape) for fine-tuning both models from the base, none a held-out question."""
    return make_rows(n, seed=FINE_TUNE_SEED, shape=FINE_TUNE, exclude=held_out_questions)
