"""The widened remainders task (issue 23): what a user types, not only the default model's training shape.

    WIDE            2-8 names, divisors 2-9, dividends 0-150, 0-20 subtractions, 0-2 nested names, chains of 2-5
    WIDE_FINE_TUNE  the same with half of the block problems nested
    EDGES           one pinned Shape per end of every range (names=2, names=8, divisor=9, chain=5, ...)

Splits (seeds as in the default task: 0 train, 1 held out, 2 fine-tune): `wide_train_rows`, `wide_held_out_rows`
(first `per_edge` rows of every edge, then draws of WIDE; every row names its edge, "" for a plain draw) and
`wide_fine_tune_rows`. `under_parallel` rewrites all but a share of the forkable rows sequentially: the
under-parallel starting point of the learning chain (curated data parallelizes a fraction of what could fork).
The default shapes and splits of `remainders` are untouched: the shipped model and its tests depend on them.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from multiverse.demo.remainders import (HELD_OUT_SEED, FINE_TUNE_SEED, TRAIN_SEED, Shape, make_rows, sample_problem,
                                       to_row)
from multiverse.structure import sequential_twin

WIDE = Shape(names=(2, 8), steps=(0, 20), divisor=(2, 9), chain=(2, 5), dependent_share=0.2, nested_share=0.3,
             dividend=(0, 150), nested_names=(1, 2))
WIDE_FINE_TUNE = replace(WIDE, nested_share=0.5)
_BLOCKS = replace(WIDE, dependent_share=0.0)  # independent problems only
_CHAINS = replace(WIDE, dependent_share=1.0)

# edge name -> a shape whose every problem sits on that end of one range (the others drawn as in WIDE)
EDGES: dict[str, Shape] = {
    "names=2": replace(_BLOCKS, names=(2, 2)),
    "names=8": replace(_BLOCKS, names=(8, 8)),
    "divisor=2": replace(WIDE, divisor=(2, 2)),
    "divisor=9": replace(WIDE, divisor=(9, 9)),
    "steps=0": replace(_BLOCKS, steps=(0, 0)),  # a chain's round offset needs at least one subtraction
    "steps=20": replace(WIDE, steps=(20, 20), divisor=(2, 7)),  # 8 x 20 would pass 150
    "dividend>=140": replace(WIDE, dividend=(140, 150), divisor=(7, 9), steps=(15, 20)),
    "nested=0": replace(_BLOCKS, nested_share=0.0),
    "nested=2": replace(_BLOCKS, nested_share=1.0, nested_names=(2, 2)),
    "chain=2": replace(_CHAINS, chain=(2, 2)),
    "chain=5": replace(_CHAINS, chain=(5, 5)),
}
PER_EDGE = 25  # held-out rows per edge: 11 edges, 275 of a 600-row split


def wide_train_rows(n: int) -> list[dict[str, Any]]:
    return make_rows(n, seed=TRAIN_SEED, shape=WIDE)


def wide_held_out_rows(n: int, exclude: set[str], per_edge: int = PER_EDGE) -> list[dict[str, Any]]:
    """n held-out rows, none a question in `exclude`: `per_edge` rows on each edge, then draws of WIDE."""
    if n < per_edge * len(EDGES):
        raise ValueError(f"{n} held-out rows cannot hold {per_edge} rows on each of the {len(EDGES)} edges")
    seen, rows = set(exclude), []
    for i, (name, shape) in enumerate(EDGES.items()):
        rows += [{**r, "edge": name} for r in make_rows(per_edge, seed=1000 * HELD_OUT_SEED + i, shape=shape, exclude=seen)]
        seen |= {r["question"] for r in rows}
    rows += [{**r, "edge": ""} for r in make_rows(n - len(rows), seed=HELD_OUT_SEED, shape=WIDE, exclude=seen)]
    return rows


def wide_fine_tune_rows(n: int, held_out_questions: set[str]) -> list[dict[str, Any]]:
    return make_rows(n, seed=FINE_TUNE_SEED, shape=WIDE_FINE_TUNE, exclude=held_out_questions)


DISTILL_SEED = 3  # the self-distillation question pool (after train 0, held out 1, fine-tune 2)


def wide_distill_rows(
    n: int, exclude: set[str], edge_share: float = 0.5, seed: int = DISTILL_SEED
) -> list[dict[str, Any]]:
    """n distinct questions for self-distillation, none in `exclude`: a seeded `edge_share` of them drawn from
    one of EDGES (in turn over the edges), the rest from WIDE_FINE_TUNE. Each row names its edge ("" for a plain
    draw). Only questions matter here: distillation samples and grades its own answers."""
    if not 0.0 <= edge_share <= 1.0:
        raise ValueError(f"edge_share must be in [0, 1], got {edge_share}")
    rng, seen, rows, names = random.Random(seed), set(exclude), [], list(EDGES)
    while len(rows) < n:
        edge = names[len(rows) % len(names)] if rng.random() < edge_share else ""
        p = sample_problem(rng, EDGES[edge] if edge else WIDE_FINE_TUNE)
        if p.question not in seen:
            seen.add(p.question)
            rows.append({**to_row(p), "edge": edge})
    return rows


def under_parallel(rows: list[dict[str, Any]], share: float, seed: int = 0) -> list[dict[str, Any]]:
    """Rows where a seeded `share` of the forkable problems keep their block and the rest are written
    sequentially (the parallel trace becomes its sequential twin); each row says which (`written_parallel`)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    forkable = [i for i, r in enumerate(rows) if not r["dependent"]]
    keep = set(random.Random(seed).sample(forkable, round(share * len(forkable))))
    out = []
    for i, r in enumerate(rows):
        parallel = i in keep
        trace = r["deepseek_thinking_trajectory_parallel"]
        out.append({**r, "deepseek_thinking_trajectory_parallel": trace if parallel else sequential_twin(trace),
                    "written_parallel": parallel})
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m multiverse.demo.wide --out runs/wide [--rows 6000] [--edge-share 0.5]`: OUT/distill_pool.jsonl,
    questions for self-distillation beyond OUT/finetune.jsonl, none of them held out or in the fine-tune file."""
    import argparse
    import json
    import os

    from multiverse.demo.remainders import write_jsonl

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/wide", help="a folder `reproduce --shape wide` wrote")
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--edge-share", type=float, default=0.5, help="share of the questions on a range's edge")
    args = parser.parse_args(argv)
    exclude: set[str] = set()
    for name in ("heldout.jsonl", "finetune.jsonl"):
        path = os.path.join(args.out, name)
        if not os.path.isfile(path):
            parser.error(f"{path} is missing: run `python -m multiverse.demo.reproduce --shape wide --out {args.out}`")
        with open(path, encoding="utf-8") as f:
            exclude |= {json.loads(line)["question"] for line in f if line.strip()}
    rows = wide_distill_rows(args.rows, exclude, args.edge_share)
    write_jsonl(os.path.join(args.out, "distill_pool.jsonl"), rows)
    on_edge = sum(bool(r["edge"]) for r in rows)
    print(f"wrote {len(rows)} questions ({on_edge} on an edge) to {os.path.join(args.out, 'distill_pool.jsonl')}")


if __name__ == "__main__":
    main()
