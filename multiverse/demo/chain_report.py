"""Issue 23's figures from `multiverse eval` output only: one row per stage of the learning chain.

    python -m multiverse.demo.chain_report --out runs/wide          # reads runs/wide/eval/<stage>/records.jsonl

Each eval record is joined to its held-out row (the record's id is the row's line in heldout.jsonl, checked
against the question text) to read what the record lacks: whether the problem could fork (`dependent` false) and
which range edge it sits on (`edge`). Per stage: accuracy (Wilson 95%), forked fraction among forkable problems
(Wilson 95%), degree of parallelism over all rows, accuracy on 2- and 3-name questions and the lowest accuracy
over the range edges. The paired speed of `eval/rl-vs-start-batch1` (RL model against the start, both forking) is
added when present. Writes OUT/eval/chain.md and OUT/eval/chain.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any, Sequence

from multiverse.evaluation.metrics import proportion

STAGES = ("start", "full", "distill", "rl", "no_bonus")
NAMES = re.compile(r"(?:Let |, )([A-Z]) = ")


def held_out(path: str) -> dict[str, dict[str, Any]]:
    """Line number (1-based, as the eval's ids) -> row."""
    with open(path, encoding="utf-8") as f:
        return {str(i): json.loads(text) for i, text in enumerate(f, 1) if text.strip()}


def joined(records_path: str, rows: dict[str, dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, held-out row) pairs; a record whose question differs from its row's is an error (another file)."""
    out = []
    with open(records_path, encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            rec = json.loads(text)
            row = rows.get(rec["id"])
            if row is None or row["question"] not in rec["prompt"][-1]["content"]:
                raise ValueError(f"{records_path}:{n}: id {rec['id']} is not that line of the held-out file")
            out.append((rec, row))
    return out


def names(question: str) -> int:
    return len(NAMES.findall(question))


def stage_figures(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    correct = lambda sel: proportion([float(r["correct"]) for r, row in pairs if sel(row)])  # noqa: E731
    forkable = [float(r["forks"] > 0) for r, row in pairs if not row["dependent"]]
    edges = sorted({row["edge"] for _, row in pairs if row.get("edge")})
    by_edge = {e: correct(lambda row, e=e: row.get("edge") == e).mean for e in edges}
    return {
        "rows": len(pairs),
        "accuracy": correct(lambda row: True).as_dict(),
        "forked_forkable": proportion(forkable).as_dict() if forkable else None,
        "parallelism": sum(r["degree_of_parallelism"] for r, _ in pairs) / max(1, len(pairs)),
        "critical_path": sum(r["critical_path"] for r, _ in pairs) / max(1, len(pairs)),
        "names2": correct(lambda row: names(row["question"]) == 2).as_dict(),
        "names3": correct(lambda row: names(row["question"]) == 3).as_dict(),
        "edges": by_edge,
        "worst_edge": min(by_edge.items(), key=lambda kv: kv[1]) if by_edge else None,
    }


def report(out: str) -> dict[str, Any]:
    rows = held_out(os.path.join(out, "heldout.jsonl"))
    result: dict[str, Any] = {}
    for stage in STAGES:
        path = os.path.join(out, "eval", stage, "records.jsonl")
        if os.path.isfile(path):
            result[stage] = stage_figures(joined(path, rows))
    # the twin: the first stage's baseline, else the twin evaluated on its own
    twins = [os.path.join(out, "eval", stage, "baseline", "records.jsonl") for stage in result]
    twin = next((p for p in twins + [os.path.join(out, "eval", "twin", "records.jsonl")] if os.path.isfile(p)), None)
    if twin is not None:
        result["twin"] = stage_figures(joined(twin, rows))
    speed = os.path.join(out, "eval", "rl-vs-start-batch1", "summary.json")
    if os.path.isfile(speed):
        with open(speed, encoding="utf-8") as f:
            result["speed_rl_vs_start"] = json.load(f).get("speed")
    return result


def table(result: dict[str, Any]) -> str:
    head = ("| stage | rows | accuracy (95% CI) | forked, forkable (95% CI) | parallelism | critical path "
            "| 2 names | 3 names | worst edge |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for stage, f in result.items():
        if stage == "speed_rl_vs_start":
            continue
        acc, fk = f["accuracy"], f["forked_forkable"]
        fork = f"{fk['mean']:.3f} ({fk['ci95'][0]:.3f}-{fk['ci95'][1]:.3f})" if fk else "-"
        worst = f"{f['worst_edge'][0]}: {f['worst_edge'][1]:.2f}" if f["worst_edge"] else "-"
        lines.append(f"| {stage} | {f['rows']} | {acc['mean']:.3f} ({acc['ci95'][0]:.3f}-{acc['ci95'][1]:.3f}) | {fork} "
                     f"| {f['parallelism']:.2f} | {f['critical_path']:.0f} | {f['names2']['mean']:.3f} "
                     f"| {f['names3']['mean']:.3f} | {worst} |")
    s = result.get("speed_rl_vs_start")
    if s and s.get("speedup"):
        f, a = s["speedup"], s["speedup_all"]
        lines.append(f"\nPaired wall clock at batch {s['batch_size']}, RL model against the start (both may fork): median "
                     f"speedup {f['median']:.2f}x over the {f['n']} pairs where the RL model forked (quartiles "
                     f"{f['q25']:.2f}-{f['q75']:.2f}), {a['median']:.2f}x over all {a['n']} pairs.")
        mean = s.get("mean_wall_per_question_s_forked")
        if mean:
            lines[-1] += (f" Mean time per question over the forked pairs: {mean['parallel']:.2f} s against "
                          f"{mean['sequential']:.2f} s ({mean['ratio']:.2f}x).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/wide", help="the chain's folder (learn_chain --out)")
    args = parser.parse_args(argv)
    result = report(args.out)
    if not result:
        parser.error(f"no stage evaluated under {args.out}/eval (run learn_chain's eval stage first)")
    text = table(result)
    with open(os.path.join(args.out, "eval", "chain.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "eval", "chain.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
