"""Decode paths reading their common prefix once against every path gathering its whole table (engine).

Workload per request: a prompt of P tokens, then a block of 8 outlines and 8 paths of 64 tokens (forced
<Path> LABEL ":" included), a short conclusion and EOS, written exactly by a scripted logits processor (greedy),
on a tiny random Qwen2 (hidden 128, 4 layers, GQA 4:2). For each P and batch size, two engines on the same model:
`shared_prefix_slots=512` (the default) and `None` (always gather). They run round robin; the speedup is the
median over rounds of the paired ratio gather / once. Both must write the same tokens; their greedy
log-probabilities are compared (max |difference|). Prints a table to stderr and ONE JSON line to stdout.

    python benchmarks/prefix_once.py [--prompts 256 1024 4096] [--batches 1 4] [--rounds 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from engine.script import ScriptedProcessor  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402
from multiverse.tiny import build_model, build_tokenizer  # noqa: E402

PATHS, PATH_TOKENS = 8, 64


def block(rng: random.Random, vocab: StructureVocab, words: list[int]) -> list[int]:
    """<Parallel><Goal> 8 outlines </Goal> 8 paths of PATH_TOKENS <Conclusion>..</Conclusion></Parallel>."""
    t, pick = vocab.tags, lambda n: [rng.choice(words) for _ in range(n)]  # noqa: E731
    goal = [t.parallel_open, t.goal_open]
    for i in range(1, PATHS + 1):
        goal += [t.outline_open] + vocab.encode(f"{i}:") + pick(2) + [t.outline_close]
    paths: list[int] = []
    for i in range(1, PATHS + 1):
        opening = [t.path_open] + vocab.encode(f"{i}:")
        paths += opening + pick(PATH_TOKENS - len(opening) - 1) + [t.path_close]
    return goal + [t.goal_close] + paths + [t.conclusion_open] + pick(8) + [t.conclusion_close, t.parallel_close]


def run(lm: MultiverseLM, tok, prompts: list[list[int]], gens: list[list[int]]) -> tuple[float, list]:
    params = [SamplingParams(max_new_tokens=len(g) + 8, temperature=0, logprobs=True,
                             logits_processors=[ScriptedProcessor(p + g, len(p), tok)]) for p, g in zip(prompts, gens)]
    start = time.perf_counter()
    outs = lm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    for out, g in zip(outs, gens):
        assert out.token_ids == g, "the scripted run diverged from its script"
    return elapsed, outs


def case(model, tok, prompt_len: int, batch: int, rounds: int) -> dict:
    vocab = StructureVocab.from_tokenizer(tok)
    rng = random.Random(prompt_len * 100 + batch)
    words = [i for i in range(3, 256) if tok.decode([i]).strip()]
    prompts = [[rng.choice(words) for _ in range(prompt_len)] for _ in range(batch)]
    gens = [block(rng, vocab, words) + [tok.eos_token_id] for _ in range(batch)]
    engines = {"once": MultiverseLM(model, tok), "gather": MultiverseLM(model, tok, shared_prefix_slots=None)}
    outs = {name: run(lm, tok, prompts, gens)[1] for name, lm in engines.items()}  # warm-up, and the check
    diff = max(abs(a - b) for o1, o2 in zip(outs["once"], outs["gather"])
               for a, b in zip(o1.logprobs, o2.logprobs) if a is not None and b is not None)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):  # round robin: background load hits both sides of a round alike
        for name, lm in engines.items():
            times[name].append(run(lm, tok, prompts, gens)[0])
    ratios = [g / s for g, s in zip(times["gather"], times["once"])]
    return {"prompt_tokens": prompt_len, "batch": batch, "paths": PATHS, "once_s": min(times["once"]),
            "gather_s": min(times["gather"]), "speedup": statistics.median(ratios), "max_logprob_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, seed=0)
    model.config.max_position_embeddings = max(args.prompts) + 2048
    rows = [case(model, tok, p, b, args.rounds) for p in args.prompts for b in args.batches]
    head = f"{'prompt':>7} {'batch':>5} {'once s':>9} {'gather s':>9} {'speedup':>8} {'max |dlogp|':>12}"
    print(head, file=sys.stderr)
    for r in rows:
        print(f"{r['prompt_tokens']:>7} {r['batch']:>5} {r['once_s']:>9.3f} {r['gather_s']:>9.3f} "
              f"{r['speedup']:>7.2f}x {r['max_logprob_diff']:>12.2e}", file=sys.stderr)
    print(json.dumps({"model": "tiny qwen2 hidden=128 layers=4 heads=4 kv_heads=2", "threads": args.threads,
                      "workload": f"prompt P + {PATHS} paths x {PATH_TOKENS} (scripted, greedy)", "results": rows}))


if __name__ == "__main__":
    main()
