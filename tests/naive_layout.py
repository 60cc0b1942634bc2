"""A naive reference for positions and visibility of WELL-FORMED canonical ids, written from SPEC §3-§4 alone.

O(L^2) and loop-based on purpose: path spans are matched with a stack, siblings are blanked pairwise, and
positions are produced by shifting the whole suffix at every <Path> and <Conclusion>.
"""
from __future__ import annotations

import torch

from multiverse.tags import TagIds


def naive_layout(ids: list[int], tags: TagIds) -> tuple[list[int], torch.Tensor]:
    L = len(ids)
    visible = torch.tril(torch.ones(L, L, dtype=torch.bool))
    pos = list(range(L))
    blocks: list[dict] = []  # open blocks: goal-end position, its paths' spans, the largest </Path> position
    opened: list[int] = []
    for i, t in enumerate(ids):
        if t == tags.parallel_open:
            blocks.append({"g": None, "paths": [], "m": None})
        elif t == tags.goal_close and blocks and blocks[-1]["g"] is None:
            blocks[-1]["g"] = pos[i]
        elif t == tags.path_open:
            opened.append(i)
            _shift(pos, i, blocks[-1]["g"] + 1)
        elif t == tags.path_close:
            start = opened.pop()
            block = blocks[-1]
            for a, b in block["paths"]:  # earlier siblings are hidden from this path, in both directions
                visible[start : i + 1, a : b + 1] = False
            block["paths"].append((start, i))
            block["m"] = pos[i] if block["m"] is None else max(block["m"], pos[i])
        elif t == tags.conclusion_open and blocks:
            _shift(pos, i, blocks[-1]["m"] + 1)
        elif t == tags.parallel_close:
            blocks.pop()
    return pos, visible


def _shift(pos: list[int], i: int, target: int) -> None:
    delta = target - pos[i]
    for j in range(i, len(pos)):
        pos[j] += delta
