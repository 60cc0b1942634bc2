"""The SGLang backend on CPU: KV prefilled per merge (exact plugin vs approximate stock SGLang) and wall-clock of
the native engine vs SGLang on the same scripted workload.

Workload: held-out questions of the shipped model's task (multiverse.demo.remainders), each answered by its
canonical trace (a block of 4-6 paths, some nested, or a sequential chain), written exactly by a scripted
processor on every contender (greedy): native MultiverseLM in-process, the SGLang client against a server with
the multiverse plugin (exact merges), and, if given, against a stock SGLang (approximate merges, client opt-in).
Rounds alternate native / SGLang; the speed ratio is the median of the paired per-round ratios. Prints ONE JSON line.

Start the servers first (LAUNCH: a script that starts SGLang from its own environment, the one the opt-in
tests read from MV_SGLANG_LAUNCH; engine/README.md, "SGLang"):
    SGLANG_PLUGINS=multiverse $LAUNCH VENV multiverse/assets/tiny-multiverse 30123 \\
        --radix-cache-backend multiverse --page-size 1 --enable-custom-logit-processor
    SGLANG_PLUGINS=none $LAUNCH VENV multiverse/assets/tiny-multiverse 30124 --enable-custom-logit-processor
    python benchmarks/sglang.py --exact-url http://127.0.0.1:30123 [--stock-url http://127.0.0.1:30124]

What a GPU run would add: FlashInfer/FA3 attention, CUDA graphs and the overlap scheduler (none run on CPU),
where SGLang's decode is far faster than our engine's; the merge cost stays 1 prefilled token with the plugin
against (paths 2..n + 1) without it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent  # this file is named like the `sglang` package: keep it off sys.path
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from engine.script import ScriptedProcessor  # noqa: E402
from engine.sglang.plugin.script import script_params  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.demo.remainders import HELD_OUT, make_rows  # noqa: E402
from multiverse.encode import encode_trace  # noqa: E402


def workload(tok, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for row in make_rows(n, seed=seed, shape=HELD_OUT):
        messages = [{"role": "user", "content": row["question"]}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt = list(tok(text, add_special_tokens=False)["input_ids"])
        trace = encode_trace(row["deepseek_thinking_trajectory_parallel"], tok)
        out.append((prompt, prompt + trace + [tok.eos_token_id]))
    return out


def run_native(lm, jobs) -> tuple[float, list]:
    params = [SamplingParams(temperature=0, max_new_tokens=2000, logits_processors=[ScriptedProcessor(t, len(p), lm.tokenizer)]) for p, t in jobs]
    start = time.perf_counter()
    outs = lm.generate([p for p, _ in jobs], params)
    return time.perf_counter() - start, outs


def run_client(client, jobs) -> tuple[float, list]:
    tok = client.tokenizer
    start = time.perf_counter()
    outs = client.generate([p for p, _ in jobs], SamplingParams(temperature=0, max_new_tokens=2000),
                           server_processors=[script_params(t, len(p), tok) for p, t in jobs])
    return time.perf_counter() - start, outs


def prefill_per_merge(outs) -> float | None:
    counts = [n for o in outs for n in o.stats.merge_prefill_tokens]
    return statistics.mean(counts) if counts else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exact-url", required=True, help="SGLang with the multiverse plugin")
    ap.add_argument("--stock-url", default=None, help="SGLang without it (approximate merges)")
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    native = MultiverseLM(str(DEFAULT_MODEL))
    exact = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=args.exact_url)
    jobs = workload(native.tokenizer, args.requests, args.seed)
    ratios, native_s, sglang_s = [], [], []
    for _ in range(args.rounds):
        t_native, want = run_native(native, jobs)
        t_sglang, got = run_client(exact, jobs)
        native_s.append(t_native)
        sglang_s.append(t_sglang)
        ratios.append(t_sglang / t_native)
    result = {
        "requests": len(jobs),
        "generated_tokens": sum(o.stats.generated_tokens for o in want),
        "merges": sum(o.stats.num_merges for o in want),
        "identical_tokens": all(a.token_ids == b.token_ids for a, b in zip(want, got)),
        "merges_exact": sum(o.stats.merges_exact for o in got),
        "prefill_per_merge_exact": prefill_per_merge(got),
        "native_best_s": min(native_s),
        "sglang_best_s": min(sglang_s),
        "sglang_over_native_median": statistics.median(ratios),
    }
    exact.close()
    if args.stock_url:
        stock = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=args.stock_url, approximate=True)
        t_stock, approx = run_client(stock, jobs)
        stock.close()
        result |= {
            "prefill_per_merge_approximate": prefill_per_merge(approx),
            "merges_recomputed_approximate": sum(o.stats.merges_recomputed for o in approx),
            "sglang_stock_s": t_stock,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
