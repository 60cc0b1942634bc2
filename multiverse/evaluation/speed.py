"""Wall-clock speed, measured honestly (SPEC §7): the parallel side (the model, forking) and the sequential side
decode the same questions, in ABBA order (round r runs parallel first when r is even, sequential first when odd),
so drift and warm-up hit both sides alike. A pair is one (chunk of `batch_size` questions, round): at batch 1 one
question. Both sides' answers are graded, so a fast side that answers wrong is seen.

The sequential side is either an autoregressive baseline (--baseline-model, e.g. the twin): then the median of the
paired ratios sequential wall / parallel wall is a speedup; or this same model with forks off: a model trained to
fork, decoding without forks, is not a baseline (it may answer worse), so the same ratio is reported as
`forks_off_ratio`, the output says so, and `speedup` is None. Reported too: the ratios' spread (quartiles, min,
max) over the pairs whose parallel side forked and over all pairs, the mean wall per question, per-token latency
(wall / critical path) and tokens/s of each side. No figure is extrapolated (e.g. to "equal work"): the two sides
write different texts and only measured times are compared. A run whose parallel side never forked reports no
ratio: there is nothing to compare.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from multiverse.evaluation.backends.base import Backend
from multiverse.evaluation.grading import grade, graded_text, special_tokens
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.runner import prepare
from multiverse.evaluation.tasks import Problem


def timed(backend: Backend, prompts: Sequence[Any], decs: Sequence[Any], problems: Sequence[Problem]) -> dict[str, Any]:
    """One timed call over a chunk of prompts decoded together; counts are summed over the chunk, except the
    critical path (the longest: what the chunk waits for). The answers are graded after the clock stops."""
    start = time.perf_counter()
    gens = backend.generate_all(list(prompts), list(decs))
    wall = time.perf_counter() - start
    specials = special_tokens(backend.tokenizer)
    grades = [grade(p, graded_text(g.raw_text, specials), truncated=g.truncated) for p, g in zip(problems, gens)]
    generated = sum(g.generated_tokens for g in gens)
    critical = max(g.critical_path for g in gens)
    return {
        "wall_s": wall,
        "wall_per_question_s": wall / len(gens),
        "generated_tokens": generated,
        "forced_tokens": sum(g.forced_tokens for g in gens),
        "critical_path": critical,
        "forks": sum(g.num_forks for g in gens),
        "latency_per_position_s": wall / max(1, critical),
        "tokens_per_s": generated / wall if wall > 0 else 0.0,
        "correct": sum(g.correct for g in grades),
        "predicted": [g.predicted for g in grades],
    }


def spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    qs = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q25": qs[0], "q75": qs[2], "min": min(values), "max": max(values), "n": len(values)}


def compare_sequential(
    parallel: Backend,
    sequential: Backend,
    problems: Sequence[tuple[str, Problem]],
    config: EvalConfig,
    rounds: int,
    out_path: str,
    progress: bool = True,
    sequential_config: EvalConfig | None = None,
    batch_size: int = 1,
    *,
    baseline: bool,
) -> dict[str, Any]:
    """`sequential_config` (default `config`) builds the sequential side's prompts (e.g. the twin's suffix);
    `baseline`: the sequential side is an autoregressive baseline (a speedup), not this model with forks off."""
    sides = [("parallel", parallel, config), ("sequential", sequential, sequential_config or config)]
    chunks = [problems[i : i + batch_size] for i in range(0, len(problems), batch_size)]
    pairs = []
    bar = tqdm(total=len(chunks) * rounds * 2, desc="speed", unit="run", disable=not progress)
    with open(out_path, "a", encoding="utf-8") as f:
        for r in range(rounds):
            for chunk in chunks:
                pair: dict[str, Any] = {"task": chunk[0][0], "id": chunk[0][1].id, "questions": len(chunk), "round": r,
                                        "first": sides[r % 2][0]}
                for side, backend, cfg in sides if r % 2 == 0 else sides[::-1]:
                    # the prompts of this side, budgets fitted into its context (the eval runs warned already)
                    ready = prepare(backend, [(task, p, 0) for task, p in chunk], cfg, warn=lambda message: None)
                    pair[side] = timed(backend, [x[0] for x in ready], [x[2] for x in ready], [p for _, p in chunk])
                    bar.update(1)
                f.write(json.dumps(pair) + "\n")
                f.flush()
                pairs.append(pair)
    bar.close()
    return {"batch_size": batch_size, **speed_summary(pairs, baseline)}


NOT_A_BASELINE = ("the sequential side is this model with forks off, which is not a baseline (a model trained to fork, "
                  "decoding without forks); the ratio measures forking on one model and is not a speedup: give "
                  "--baseline-model (an autoregressive model) for one")


def speed_summary(pairs: Sequence[dict[str, Any]], baseline: bool) -> dict[str, Any]:
    side = lambda name, key: [p[name][key] for p in pairs]  # noqa: E731
    forked = sum(p["parallel"]["forks"] > 0 for p in pairs)
    questions = sum(p["questions"] for p in pairs)
    out: dict[str, Any] = {
        "sequential_side": "baseline" if baseline else "forks_off",
        "pairs": len(pairs),
        "pairs_with_forks": forked,
        "accuracy": {k: sum(p[k]["correct"] for p in pairs) / max(1, questions) for k in ("parallel", "sequential")},
        "parallel": {k: spread(side("parallel", k)) for k in ("latency_per_position_s", "tokens_per_s", "critical_path")},
        "sequential": {k: spread(side("sequential", k)) for k in ("latency_per_position_s", "tokens_per_s", "critical_path")},
        "per_position_latency_ratio": spread(
            [p["parallel"]["latency_per_position_s"] / p["sequential"]["latency_per_position_s"] for p in pairs]
        ),
        "speedup": None,
    }
    if not baseline:
        out["note"] = NOT_A_BASELINE
    if forked == 0:
        out["wall_ratio"] = None
        out["note"] = "the parallel run never forked: it decoded sequentially, so no ratio is reported"
        return out
    with_forks = [p for p in pairs if p["parallel"]["forks"] > 0]
    out["wall_ratio"] = spread([p["sequential"]["wall_s"] / p["parallel"]["wall_s"] for p in with_forks])
    out["wall_ratio_all"] = spread([p["sequential"]["wall_s"] / p["parallel"]["wall_s"] for p in pairs])
    if baseline:
        out["speedup"], out["speedup_all"] = out["wall_ratio"], out["wall_ratio_all"]
    else:
        out["forks_off_ratio"] = out["wall_ratio"]
    for name, chosen in (("forked", with_forks), ("all", pairs)):  # mean wall per question, each side
        par, seq = (statistics.fmean(p[k]["wall_per_question_s"] for p in chosen) for k in ("parallel", "sequential"))
        out[f"mean_wall_per_question_s_{name}"] = {"parallel": par, "sequential": seq, "ratio": seq / par}
    out["tokens_per_s_ratio"] = spread([p["parallel"]["tokens_per_s"] / p["sequential"]["tokens_per_s"] for p in with_forks])
    return out


def print_speed(s: dict[str, Any]) -> str:
    par, seq = s["parallel"]["latency_per_position_s"], s["sequential"]["latency_per_position_s"]
    is_baseline = s["sequential_side"] == "baseline"
    seq_name = "baseline" if is_baseline else "forks off"
    acc = s["accuracy"]
    lines = [
        f"speed: {s['pairs']} ABBA pairs at batch {s.get('batch_size', 1)} ({s['pairs_with_forks']} forked), "
        f"sequential side: {'the baseline model' if is_baseline else 'this model with forks off (NOT a baseline)'}",
        f"  answers graded: parallel {acc['parallel']:.3f} correct, {seq_name} {acc['sequential']:.3f}",
        f"  per-position latency: parallel {par['median'] * 1e3:.2f} ms, {seq_name} {seq['median'] * 1e3:.2f} ms",
        f"  tokens/s: parallel {s['parallel']['tokens_per_s']['median']:.1f}, "
        f"{seq_name} {s['sequential']['tokens_per_s']['median']:.1f}",
    ]
    if s["wall_ratio"] is None:
        lines.append(f"  speedup: none ({s['note']})")
        return "\n".join(lines)
    r, al, mf, ma = s["wall_ratio"], s["wall_ratio_all"], s["mean_wall_per_question_s_forked"], s["mean_wall_per_question_s_all"]
    what = "wall-clock speedup over the baseline" if is_baseline else "forks-off / forks-on wall ratio (not a speedup)"
    lines += [
        f"  {what} (median of paired ratios): {r['median']:.2f}x "
        f"[quartiles {r['q25']:.2f}-{r['q75']:.2f}, range {r['min']:.2f}-{r['max']:.2f}, n={r['n']}]",
        f"  over all pairs (forked or not): {al['median']:.2f}x [quartiles {al['q25']:.2f}-{al['q75']:.2f}]",
        f"  mean wall per question, forked pairs: parallel {mf['parallel']:.3f} s, {seq_name} {mf['sequential']:.3f} s "
        f"({mf['ratio']:.2f}x); all pairs: {ma['ratio']:.2f}x",
    ]
    if not is_baseline:
        lines.append(f"  note: {s['note']}")
    return "\n".join(lines)
