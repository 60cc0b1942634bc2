"""The path cap: how many paths of a fork decode at once, and in which order (Fast-dLLM's factor rule, arXiv
2505.22618, at branch level).

At `</Goal>` each outline gets a confidence c: the mean probability of the tokens sampled inside its
`<Outline>...</Outline>` (1.0 for an outline the engine did not sample, e.g. one in the prompt). Paths start in
order of falling confidence. `max_concurrent_paths=k` lets k decode at once; `path_rule="factor"` with factor f
lets the n most confident decode at once, n the largest with (n+1)(1 - c(n)) < f over the sorted confidences
(at least 1). With both, the smaller wins. A held-back path starts when a running sibling closes.

Exact: a path still sees only the shared prefix and its own tokens (never a sibling), keeps its own random
stream and positions, and the merge still reads path 1 + ... + path n in label order; so every token is the one
the uncapped run writes (while no budget runs out: budgets count tokens in the order they are written).
"""
from __future__ import annotations

import math

from engine.params import SamplingParams
from multiverse.tags import TagIds


def outline_confidences(tokens: list[int], logprobs: list[float | None], tags: TagIds) -> list[float]:
    """Per outline of the block whose `</Goal>` ends `tokens`: mean probability of its sampled tokens."""
    start = len(tokens) - 1 - tokens[::-1].index(tags.goal_open)
    out: list[float] = []
    inside: list[float] | None = None
    for token, lp in zip(tokens[start:], logprobs[start:]):
        if token == tags.outline_open:
            inside = []
        elif token == tags.outline_close and inside is not None:
            out.append(sum(inside) / len(inside) if inside else 1.0)
            inside = None
        elif inside is not None and lp is not None:
            inside.append(math.exp(lp))
    return out


def factor_count(confidences: list[float], f: float) -> int:
    """The largest n with (n+1)(1 - c(n)) < f over the confidences sorted high to low; at least 1."""
    ranked = sorted(confidences, reverse=True)
    n = 1
    for i, c in enumerate(ranked, start=1):
        if (i + 1) * (1 - c) < f:
            n = i
    return n


def plan(confidences: list[float], params: SamplingParams) -> tuple[list[int], int | None]:
    """(start order of the paths as indices, most decoding at once or None for all)."""
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])  # stable: ties keep label order
    limits = []
    if params.max_concurrent_paths is not None:
        limits.append(params.max_concurrent_paths)
    if params.path_rule == "factor":
        assert params.path_factor is not None
        limits.append(factor_count(confidences, params.path_factor))
    return order, min(limits) if limits else None


def capped(params: SamplingParams) -> bool:
    return params.max_concurrent_paths is not None or params.path_rule is not None
