"""Parallel groups from the dependency graph (networkx), never from the model's free text.

Among siblings, a group is a maximal run of ADJACENT steps that are mutually independent: no path in the
dependency DAG (transitive closure) between any two of them. Runs of one step stay sequential. A main step
with substeps is grouped again inside, which nests a block inside a path (or puts a block in plain text when
the main step itself runs alone). The plan is a tree of Items: sentence ranges and blocks.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Union

import networkx as nx

from data_pipeline.config import GroupingConfig
from data_pipeline.steps import Step


@dataclass(frozen=True)
class Sentences:
    first: int  # sentence indices [first, last)
    last: int


@dataclass(frozen=True)
class Member:
    """One path of a block: the step it came from and its content."""

    step: Step
    items: tuple["Item", ...]


@dataclass(frozen=True)
class Block:
    id: str  # "B1", "B2", ... in document order (outer before inner)
    members: tuple[Member, ...]

    def own_sentences(self, member: Member) -> list[int]:
        return [k for it in member.items if isinstance(it, Sentences) for k in range(it.first, it.last)]


Item = Union[Sentences, Block]


def independent_runs(siblings: tuple[Step, ...], edges: frozenset[tuple[str, str]], max_paths: int) -> list[list[Step]]:
    """Split siblings (in order) into maximal runs of adjacent, mutually independent steps."""
    graph = nx.DiGraph()
    graph.add_nodes_from(s.id for s in siblings)
    ids = set(graph.nodes)
    graph.add_edges_from((a, b) for a, b in edges if a in ids and b in ids)
    reach = nx.transitive_closure_dag(graph)
    runs: list[list[Step]] = []
    for step in siblings:
        run = runs[-1] if runs else None
        if run and len(run) < max_paths and not any(reach.has_edge(m.id, step.id) for m in run):
            run.append(step)
        else:
            runs.append([step])
    return runs


def plan(steps: tuple[Step, ...], edges: frozenset[tuple[str, str]], cfg: GroupingConfig) -> tuple[Item, ...]:
    """The whole trace as items; block ids are numbered in document order."""
    counter = itertools.count(1)
    return _merge(_level(steps, edges, cfg, counter))


def _level(siblings: tuple[Step, ...], edges: frozenset[tuple[str, str]], cfg: GroupingConfig,
           counter: itertools.count) -> list[Item]:
    items: list[Item] = []
    for run in independent_runs(siblings, edges, cfg.max_paths):
        if len(run) == 1:
            items += _inside(run[0], edges, cfg, counter)
            continue
        block_id = f"B{next(counter)}"
        members = tuple(Member(s, _merge(_inside(s, edges, cfg, counter))) for s in run)
        items.append(Block(block_id, members))
    return items


def _inside(step: Step, edges: frozenset[tuple[str, str]], cfg: GroupingConfig, counter: itertools.count) -> list[Item]:
    if step.substeps and cfg.nested:
        return _level(step.substeps, edges, cfg, counter)
    return [Sentences(step.first, step.last)]


def _merge(items: list[Item]) -> tuple[Item, ...]:
    """Adjacent sentence ranges fused into one."""
    out: list[Item] = []
    for it in items:
        prev = out[-1] if out else None
        if isinstance(it, Sentences) and isinstance(prev, Sentences) and prev.last == it.first:
            out[-1] = Sentences(prev.first, it.last)
        else:
            out.append(it)
    return tuple(out)


def blocks_of(items: tuple[Item, ...]) -> list[Block]:
    """Every block, outer before inner, in document order."""
    out: list[Block] = []
    for it in items:
        if isinstance(it, Block):
            out.append(it)
            for m in it.members:
                out += blocks_of(m.items)
    return out
