"""Wall-clock speed, measured honestly (SPEC §7): the parallel side (the model, forking) and the sequential side (the
same model without forks, or an autoregressive twin given by --baseline-model) decode the same questions, in
ABBA order (round r runs parallel first when r is even, sequential first when odd), so drift and warm-up hit both
sides alike. A pair is one (chunk of `batch_size` questions, round): at batch 1 one question. Reported are the
medians of the paired ratios with their spread (quartiles, min, max), over the pairs whose parallel side forked and
over all pairs, the ratio of the mean wall times per question, per-token latency (wall / critical path) and
tokens/s of each side. The two sides may write different texts, so the speedup at equal work is reported too: the
sequential side's time per token applied to the parallel side's tokens. A run whose parallel side never forked
reports no speedup: there is nothing to compare.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from multiverse.evaluation.backends.base import Backend
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.records import sample_seed
from multiverse.evaluation.runner import build_prompt, decoding
from multiverse.evaluation.tasks import Problem


def timed(backend: Backend, prompts: Sequence[Any], decs: Sequence[Any]) -> dict[str, Any]:
    """One timed call over a chunk of prompts decoded together; counts are summed over the chunk, except the
    critical path (the longest: what the chunk waits for)."""
    start = time.perf_counter()
    gens = backend.generate_all(list(prompts), list(decs))
    wall = time.perf_counter() - start
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
) -> dict[str, Any]:
    """`sequential_config` (default `config`) builds the sequential side's prompts (e.g. the twin's suffix)."""
    sides = [("parallel", parallel, config), ("sequential", sequential, sequential_config or config)]
    chunks = [problems[i : i + batch_size] for i in range(0, len(problems), batch_size)]
    pairs = []
    bar = tqdm(total=len(chunks) * rounds * 2, desc="speed", unit="run", disable=not progress)
    with open(out_path, "a", encoding="utf-8") as f:
        for r in range(rounds):
            for chunk in chunks:
                decs = [decoding(config, sample_seed(config.seed, task, p.id, 0)) for task, p in chunk]
                pair: dict[str, Any] = {"task": chunk[0][0], "id": chunk[0][1].id, "questions": len(chunk), "round": r,
                                        "first": sides[r % 2][0]}
                for side, backend, cfg in sides if r % 2 == 0 else sides[::-1]:
                    prompts = [build_prompt(p, cfg, backend.tokenizer) for _, p in chunk]
                    pair[side] = timed(backend, prompts, decs)
                    bar.update(1)
                f.write(json.dumps(pair) + "\n")
                f.flush()
                pairs.append(pair)
    bar.close()
    return {"batch_size": batch_size, **speed_summary(pairs)}


def speed_summary(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    side = lambda name, key: [p[name][key] for p in pairs]  # noqa: E731
    forked = sum(p["parallel"]["forks"] > 0 for p in pairs)
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "pairs_with_forks": forked,
        "parallel": {k: spread(side("parallel", k)) for k in ("latency_per_position_s", "tokens_per_s", "critical_path")},
        "sequential": {k: spread(side("sequential", k)) for k in ("latency_per_position_s", "tokens_per_s", "critical_path")},
        "per_position_latency_ratio": spread(
            [p["parallel"]["latency_per_position_s"] / p["sequential"]["latency_per_position_s"] for p in pairs]
        ),
    }
    if forked == 0:
        out["speedup"] = None
        out["note"] = "the parallel run never forked: it decoded sequentially, so no speedup is reported"
        return out
    with_forks = [p for p in pairs if p["parallel"]["forks"] > 0]
    out["speedup"] = spread([p["sequential"]["wall_s"] / p["parallel"]["wall_s"] for p in with_forks])
    out["speedup_all"] = spread([p["sequential"]["wall_s"] / p["parallel"]["wall_s"] for p in pairs])
    for name, chosen in (("forked", with_forks), ("all", pairs)):  # mean wall per question, each side
        par, seq = (statistics.fmean(p[k]["wall_per_question_s"] for p in chosen) for k in ("parallel", "sequential"))
        out[f"mean_wall_per_question_s_{name}"] = {"parallel": par, "sequential": seq, "ratio": seq / par}
    # the two sides write different texts: also the sequential side's time per token applied to the parallel
    # side's tokens (forced ones included: sequential decoding samples them), over the parallel wall time
    out["equal_work_speedup"] = spread([
        p["sequential"]["wall_s"] / p["sequential"]["generated_tokens"]
        * (p["parallel"]["generated_tokens"] + p["parallel"]["forced_tokens"]) / p["parallel"]["wall_s"]
        for p in with_forks
    ])
    out["tokens_per_s_ratio"] = spread([p["parallel"]["tokens_per_s"] / p["sequential"]["tokens_per_s"] for p in with_forks])
    return out


def print_speed(s: dict[str, Any]) -> str:
    par, seq = s["parallel"]["latency_per_position_s"], s["sequential"]["latency_per_position_s"]
    lines = [
        f"speed: {s['pairs']} ABBA pairs at batch {s.get('batch_size', 1)} ({s['pairs_with_forks']} forked)",
        f"  per-position latency: parallel {par['median'] * 1e3:.2f} ms, sequential {seq['median'] * 1e3:.2f} ms",
        f"  tokens/s: parallel {s['parallel']['tokens_per_s']['median']:.1f}, "
        f"sequential {s['sequential']['tokens_per_s']['median']:.1f}",
    ]
    if s["speedup"] is None:
        lines.append(f"  speedup: none ({s['note']})")
    else:
        sp = s["speedup"]
        lines.append(
            f"  wall-clock speedup (median of paired ratios): {sp['median']:.2f}x "
            f"[quartiles {sp['q25']:.2f}-{sp['q75']:.2f}, range {sp['min']:.2f}-{sp['max']:.2f}, n={sp['n']}]"
        )
        eq = s["equal_work_speedup"]
        lines.append(
            f"  at equal work (sequential s/token x parallel's tokens / parallel wall): {eq['median']:.2f}x "
            f"[quartiles {eq['q25']:.2f}-{eq['q75']:.2f}]"
        )
        al, mf, ma = s["speedup_all"], s["mean_wall_per_question_s_forked"], s["mean_wall_per_question_s_all"]
        lines.append(f"  over all pairs (forked or not): {al['median']:.2f}x [quartiles {al['q25']:.2f}-{al['q75']:.2f}]")
        lines.append(
            f"  mean wall per question, forked pairs: parallel {mf['parallel']:.3f} s, sequential {mf['sequential']:.3f} s "
            f"({mf['ratio']:.2f}x); all pairs: {ma['ratio']:.2f}x"
        )
    return "\n".join(lines)
