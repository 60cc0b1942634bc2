"""Steps and dependency edges: the checked results of the first two LLM stages.

Sentence indices are 0-based and ranges half-open inside the code ([first, last)); the prompts and replies use
1-based inclusive numbers, converted at this boundary only. Invariant of a valid step list: the main steps
tile [0, count) in order, and a step's substeps (none, or at least two) tile the step's own range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data_pipeline.llm import ReplyError


@dataclass(frozen=True)
class Step:
    id: str  # "S3" for a main step, "S3.2" for a substep
    summary: str
    first: int  # index of the first sentence
    last: int  # one past the last sentence
    substeps: tuple["Step", ...] = ()

    @property
    def parent(self) -> str | None:
        return self.id.rsplit(".", 1)[0] if "." in self.id else None


def steps_from_reply(obj: dict[str, Any], count: int) -> tuple[Step, ...]:
    """Main steps with substeps from a schema-valid reply; raises ReplyError naming the first broken span."""
    steps = tuple(_step(raw, f"S{i}") for i, raw in enumerate(obj["steps"], start=1))
    _check_tiling(steps, 0, count, "the steps")
    for step in steps:
        if len(step.substeps) == 1:
            raise ReplyError(f"step {step.id} has a single substep; give at least two or none")
        if step.substeps:
            _check_tiling(step.substeps, step.first, step.last, f"the substeps of {step.id}")
    return steps


def _step(raw: dict[str, Any], sid: str) -> Step:
    subs = tuple(_step(s, f"{sid}.{j}") for j, s in enumerate(raw.get("substeps") or [], start=1))
    return Step(sid, " ".join(raw["summary"].split()), raw["first"] - 1, raw["last"], subs)


def _check_tiling(steps: tuple[Step, ...], first: int, last: int, what: str) -> None:
    cursor = first
    for step in steps:
        span = f"{step.id} (sentences {step.first + 1}-{step.last})"
        if step.last <= step.first:
            raise ReplyError(f"{span} is empty or reversed")
        if step.first > cursor:
            raise ReplyError(f"{what} leave sentences {cursor + 1}-{step.first} unassigned before {span}")
        if step.first < cursor:
            raise ReplyError(f"{span} overlaps the previous step, which ends at sentence {cursor}")
        cursor = step.last
    if cursor != last:
        raise ReplyError(f"{what} end at sentence {cursor} but must end at sentence {last}")


def all_steps(steps: tuple[Step, ...]) -> dict[str, Step]:
    out: dict[str, Step] = {}
    for step in steps:
        out[step.id] = step
        out.update({s.id: s for s in step.substeps})
    return out


def outline_text(steps: tuple[Step, ...]) -> str:
    """The step list shown to the dependency stage."""
    lines = []
    for step in steps:
        lines.append(f"{step.id}: {step.summary}")
        lines += [f"    {s.id}: {s.summary}" for s in step.substeps]
    return "\n".join(lines)


def edges_from_reply(obj: dict[str, Any], steps: tuple[Step, ...]) -> frozenset[tuple[str, str]]:
    """Sibling edges (earlier, later). Edges between different levels are lifted to the siblings that
    contain their ends; an edge to a later step, or to an unknown id, raises ReplyError."""
    known = all_steps(steps)
    edges: set[tuple[str, str]] = set()
    for dep in obj["dependencies"]:
        later = _known(dep["step"], known)
        for need in dep["needs"]:
            edge = _lift(_known(need, known), later)
            if edge is None:
                continue
            if _order(edge[0]) >= _order(edge[1]):
                raise ReplyError(f"{later} is said to need {need}, which does not come before it")
            edges.add(edge)
    return frozenset(edges)


def _known(sid: str, known: dict[str, Step]) -> str:
    sid = sid.strip()
    if sid not in known:
        raise ReplyError(f"unknown step id {sid!r}; the ids are {', '.join(known)}")
    return sid


def _lift(a: str, b: str) -> tuple[str, str] | None:
    """The pair of siblings containing a and b (None when one contains the other)."""
    pa, pb = a.split("."), b.split(".")
    k = 0
    while k < min(len(pa), len(pb)) and pa[k] == pb[k]:
        k += 1
    if k == len(pa) or k == len(pb):
        return None
    return ".".join(pa[: k + 1]), ".".join(pb[: k + 1])


def _order(sid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in sid[1:].split("."))
