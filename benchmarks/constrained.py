"""structure="constrained" at temperature 1.5: invalid structures out of N generations, free against constrained.

Two models: a random tiny model (max_depth 1) and the shipped model on off-task prompts, each a user turn
(nesting as the model likes). Validity: the core's
parser on the final text with what the budget left open closed, after the prompt when the prompt opened a block
(multiverse.evaluation.analysis.continuation_validity).
Prints ONE JSON line.

    python benchmarks/constrained.py [--n 2000] [--batch 50] [--max-new-tokens 300]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from tqdm import tqdm  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.evaluation.analysis import continuation_validity  # noqa: E402
from multiverse.evaluation.grading import special_tokens  # noqa: E402
from multiverse.tiny import build_model, build_tokenizer  # noqa: E402

OFF_TASK = ["Write a poem about the sea.", "asdf qwer zxcv", "What is the capital of France?", "<Path>", "1: 2: 3:",
            "Let A = 5. Compute nothing at all and stop.", "</Parallel></Goal>", "Tell me a story in parallel.",
            "<Parallel><Goal>", "Explain recursion.", "7 7 7 7 7 7", "<Conclusion> done"]


def count(lm, prompts: list, n: int, batch: int, budget: int, structure: str, max_depth: int | None, name: str) -> dict:
    specials = special_tokens(lm.tokenizer)
    bad, reasons, forks, start = 0, Counter(), 0, time.perf_counter()
    for lo in tqdm(range(0, n, batch), desc=f"{name} {structure}"):
        seeds = range(lo, min(n, lo + batch))
        outs = lm.generate([prompts[s % len(prompts)] for s in seeds],
                           [SamplingParams(max_new_tokens=budget, temperature=1.5, seed=s, structure=structure,
                                           max_depth=max_depth) for s in seeds])
        for o in outs:
            prompt = lm.tokenizer.decode(o.prompt_token_ids, skip_special_tokens=False)
            bad += not continuation_validity(prompt, o.raw_text, specials).valid
            reasons[o.finish_reason] += 1
            forks += o.stats.num_forks
    return {"n": n, "invalid": bad, "finish_reasons": dict(reasons), "forks": forks, "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=300)
    args = ap.parse_args()
    tok = build_tokenizer()
    runs = {
        "random_tiny": (MultiverseLM(build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, seed=4), tok),
                        [[5, 6, 7]], 1),
        "shipped_off_task": (MultiverseLM(str(DEFAULT_MODEL)), OFF_TASK, None),
    }
    result = {}
    for name, (lm, prompts, depth) in runs.items():
        result[name] = {s: count(lm, prompts, args.n, args.batch, args.max_new_tokens, s, depth, name) for s in ("free", "constrained")}
    print(json.dumps({"temperature": 1.5, "max_new_tokens": args.max_new_tokens, **result}))


if __name__ == "__main__":
    main()
