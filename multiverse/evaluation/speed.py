"""Wall-clock speed, measured honestly (SPEC §7): the same model decodes the same questions with and without
forks, one question at a time, in ABBA order (round r runs parallel first when r is even, sequential first when
odd), so drift and warm-up hit both sides alike. Each (question, round) is one pair; reported are the medians
of the paired ratios with their spread (quartiles, min, max), per-token latency (wall / critical path) and
tokens/s of each side. The two sides write different texts (a model trained for forks decodes worse without
them), so the speedup at equal work is reported too: the sequential side's time per token applied to the
parallel side's tokens. A run whose parallel side never forked reports no speedup: there is nothing to compare.
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


def timed(backend: Backend, prompt: Any, dec: Any) -> dict[str, Any]:
    start = time.perf_counter()
    (gen,) = backend.generate_all([prompt], [dec])
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "generated_tokens": gen.generated_tokens,
        "forced_tokens": gen.forced_tokens,
        "critical_path": gen.critical_path,
        "forks": gen.num_forks,
        "latency_per_position_s": wall / max(1, gen.critical_path),
        "tokens_per_s": gen.generated_tokens / wall if wall > 0 else 0.0,
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
) -> dict[str, Any]:
    pairs = []
    bar = tqdm(total=len(problems) * rounds * 2, desc="speed", unit="run", disable=not progress)
    with open(out_path, "a", encoding="utf-8") as f:
        for r in range(rounds):
            for task, problem in problems:
                dec = decoding(config, sample_seed(config.seed, task, problem.id, 0))
                order = [("parallel", parallel), ("sequential", sequential)]
                pair: dict[str, Any] = {"task": task, "id": problem.id, "round": r, "first": order[r % 2][0]}
                for side, backend in order if r % 2 == 0 else order[::-1]:
                    pair[side] = timed(backend, build_prompt(problem, config, backend.tokenizer), dec)
                    bar.update(1)
                f.write(json.dumps(pair) + "\n")
                f.flush()
                pairs.append(pair)
    bar.close()
    return speed_summary(pairs)


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
        f"speed: {s['pairs']} ABBA pairs ({s['pairs_with_forks']} forked)",
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
    return "\n".join(lines)
