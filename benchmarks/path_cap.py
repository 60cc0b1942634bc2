"""The path cap on the shipped model: same tokens, fewer paths at once, and what it does to KV memory.

For the first N held-out remainders questions (greedy, one request at a time): the uncapped run against
max_concurrent_paths=1 and =2 and path_rule=factor (f=1). Reported per setting: questions with identical token
ids, mean peak KV pages and peak paths sampling at once (RequestOutput.stats), and their ratios to uncapped.
The PNG (OUT/path_cap_kv.png) follows the KV pages one request holds after each engine step, uncapped against
k=1, for the first question that forks. Prints ONE JSON line.

    python benchmarks/path_cap.py [--questions 20] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.evaluation.protocol import EvalConfig  # noqa: E402
from multiverse.evaluation.runner import build_prompt  # noqa: E402
from multiverse.evaluation.tasks import load_task  # noqa: E402

SETTINGS = {"uncapped": {}, "k=1": {"max_concurrent_paths": 1}, "k=2": {"max_concurrent_paths": 2},
            "factor f=1": {"path_rule": "factor", "path_factor": 1.0}}


def trace(lm, prompt, extra: dict) -> list[int]:
    """KV pages held by the request after each step (one request alone in the engine)."""
    pages = []
    request = lm.submit(prompt, SamplingParams(max_new_tokens=2048, temperature=0, **extra))
    while lm.has_work():
        lm.step()
        pages.append(lm.pool.num_used)
    assert request.output is not None
    return pages


def plot(curves: dict[str, list[int]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=f"{name} (peak {max(ys)} pages, {len(ys)} steps)")
    ax.set_xlabel("engine step")
    ax.set_ylabel("KV pages held (16 tokens each)")
    ax.set_title("one remainders question: KV over time, uncapped vs max_concurrent_paths=1", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--out", default=str(_HERE / "results"))
    args = ap.parse_args()
    lm = MultiverseLM(str(DEFAULT_MODEL))
    prompts = [build_prompt(p, EvalConfig(), lm.tokenizer) for p in load_task("remainders", limit=args.questions)]
    outs = {name: [lm.generate([p], SamplingParams(max_new_tokens=2048, temperature=0, **extra))[0] for p in prompts]
            for name, extra in SETTINGS.items()}
    base = outs["uncapped"]
    forked = [i for i, o in enumerate(base) if o.stats.num_forks]
    result = {}
    for name, got in outs.items():
        result[name] = {
            "identical": sum(a.token_ids == b.token_ids for a, b in zip(base, got)),
            "peak_kv_pages": statistics.fmean(got[i].stats.peak_kv_pages for i in forked),
            "peak_paths": statistics.fmean(got[i].stats.peak_paths for i in forked),
            "kv_ratio": statistics.fmean(got[i].stats.peak_kv_pages / base[i].stats.peak_kv_pages for i in forked),
            "paths_ratio": statistics.fmean(got[i].stats.peak_paths / base[i].stats.peak_paths for i in forked),
        }
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "path_cap_kv.png")
    first = prompts[forked[0]]
    plot({"uncapped": trace(lm, first, {}), "max_concurrent_paths=1": trace(lm, first, {"max_concurrent_paths": 1})}, png)
    print(json.dumps({"questions": len(prompts), "forked": len(forked), "settings": result, "plot": png}))


if __name__ == "__main__":
    main()
