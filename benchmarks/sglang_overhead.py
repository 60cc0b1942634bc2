"""The SGLang plugin's own time per call, no server: nested traces' calls (as the client makes them) driven
through the plugin's functions in the order SGLang calls them (engine/sglang/plugin/replay.py): match_prefix
(layout resumed from the tree's scan states, masked check, merge plan), the extend's positions, decode
positions, the insert's states. Beside it, on a sample of the same calls, the cost of scanning the whole
sequence at match and at extend (what the plugin did before the scan states).

    python benchmarks/sglang_overhead.py [--lengths 1024 8192 32768 131072] [--cap 256] [--min-calls 60]

One trace shape for every length: 64 top-level blocks over ~128K tokens (nested 2 deep, up to 4 paths). The
figure for N tokens averages the calls made while the sequence holds N/2..N tokens, on the first N tokens of
as many seeds' traces as it takes to see --min-calls calls. The calls are of the same kinds but not in the same
mix: few blocks close in the first 1K tokens of these traces, and small ones, so the 1K figure holds few merge
calls and cheap ones.

Prints ONE JSON line: per_call_ms {N: mean ms per call (match_prefix, merge, extend positions, insert)};
per_call_cold_ms, the same calls with the CPU caches flushed before each step (the stand-in tree and the call's
ids are O(N) lists that the replay walks between the plugin's steps, so a longer sequence leaves colder caches:
flushed, every length starts equal and what remains is the plugin's own work); p50_ms, p90_ms, decode_us_per_token (the hook's per-step work), new_tokens (mean tokens a call decodes),
scanned_tokens (mean tokens the plugin's scan goes over per call: what it costs, free of timing noise),
whole_scan_ms (the same calls scanning everything), segment_ms (only the full segments that are no merge: each
scans exactly cap + 1 tokens, so every length times equal work; segment_calls of them),
merge_scanned_tokens (mean tokens a merge call scans: the closed block's paths 2..n, which no earlier call of
this sequence scanned; null where no merge was timed),
calls, seeds, ratio_32k_1k, cold_ratio_32k_1k, segment_ratio_32k_1k.

What per_call_ms times is the plugin's functions only (replay.py stops the clock around the stand-in tree's
match and insert). Its growth from 1K to 32K has two parts, both reported, neither hidden: merge calls scan
their block (merge_scanned_tokens; O(block), not O(sequence)), few and small in the 1K figure, and equal work
runs in colder caches beside a longer sequence (segment_ms; with the caches flushed, per_call_cold_ms, the
lengths come closer). Times are this thread's CPU
time with Python's garbage collector paused during the replay: on a loaded machine wall time counts other
processes, and collections triggered by the stand-in tree's allocations would land on whichever plugin call
allocates next.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from engine.sglang.plugin.replay import replay  # noqa: E402
from engine.sglang.plugin.structure import server_vocab  # noqa: E402
from multiverse.attention import StructureRules, layout  # noqa: E402
from multiverse.encode import encode_trace  # noqa: E402
from multiverse.synthetic import SyntheticShape, synthetic_trace  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402
from multiverse.tiny import build_tokenizer  # noqa: E402


def nested_trace(seed: int, tok, blocks: int = 64, length: int = 131072) -> list[int]:
    """About `length` ids of text and `blocks` top-level blocks (nested 2 deep, up to 4 paths)."""
    shape = SyntheticShape(max_depth=2, max_paths=4, words=(40, 80), block_chance=0.6)
    return encode_trace(synthetic_trace(seed, blocks, shape), tok)


def whole_scan(ids: list[int], vocab: StructureVocab, rules: StructureRules) -> float:
    """The earlier per-call cost: layout() of all ids at match, and again at the extend."""
    t0 = time.thread_time()
    lay = layout(ids, vocab, rules=rules)
    (lay.hidden_hi[-1:] > lay.hidden_lo[-1:]).any()
    layout(ids, vocab, rules=rules).positions[-1:].tolist()
    return time.thread_time() - t0


def flush(buffer: list[int] = list(range(1 << 21))) -> int:
    """Read 16 MiB of memory: the CPU caches hold the same nothing before each timed step, at every length."""
    return sum(buffer[::2])


def cold(n: int, args: argparse.Namespace, vocab: StructureVocab, rules: StructureRules, tok) -> float:
    """Mean ms per call at n/2..n tokens with the caches flushed before each step."""
    late: list[float] = []
    seed = 0
    while len(late) < args.min_calls:
        ids = nested_trace(seed, tok)[:n]
        seed += 1
        late += [s.seconds * 1e3 for s in replay(ids, vocab, rules, args.cap, settle=flush) if len(s.call.ids) > n // 2]
    return round(statistics.fmean(late), 4)


def measure(n: int, args: argparse.Namespace, tok, vocab: StructureVocab, rules: StructureRules) -> dict:
    """Replay the first n tokens of seed after seed until min_calls calls at n/2..n tokens were timed."""
    late, sample, added, scanned, decode_s, seeds = [], [], [], [], 0.0, 0
    segment, merge_scan = [], []  # full segments' ms (equal work at every length); merges' scanned tokens
    while len(late) < args.min_calls:
        ids = nested_trace(seeds, tok)[:n]
        seeds += 1
        gc.collect()
        gc.disable()
        try:
            for served in replay(ids, vocab, rules, args.cap):
                if len(served.call.ids) > n // 2:
                    late.append(served.seconds * 1e3)
                    sample.append(served.call.ids)
                    added.append(len(served.call.out))
                    scanned.append(served.scanned)
                    decode_s += served.decode_seconds
                    if served.plan is None and served.scanned == args.cap + 1 and len(served.call.out) == args.cap:
                        segment.append(served.seconds * 1e3)
                    if served.plan is not None:
                        merge_scan.append(served.scanned)
        finally:
            gc.enable()
    step = max(1, len(sample) // args.whole_sample)
    whole = [whole_scan(c, vocab, rules) * 1e3 for c in sample[::step][: args.whole_sample]]
    gc.disable()
    try:
        cold_ms = cold(n, args, vocab, rules, tok)
    finally:
        gc.enable()
    return {
        "per_call_ms": round(statistics.fmean(late), 4),
        "per_call_cold_ms": cold_ms,
        "p50_ms": round(statistics.median(late), 4),
        "p90_ms": round(statistics.quantiles(late, n=10)[-1], 4),
        "decode_us_per_token": round(decode_s / max(sum(added), 1) * 1e6, 3),
        "new_tokens": round(statistics.fmean(added), 1),
        "scanned_tokens": round(statistics.fmean(scanned), 1),
        "whole_scan_ms": round(statistics.fmean(whole), 3),
        "segment_ms": round(statistics.fmean(segment), 4) if segment else None,
        "segment_calls": len(segment),
        "merge_scanned_tokens": round(statistics.fmean(merge_scan), 1) if merge_scan else None,
        "calls": len(late),
        "seeds": seeds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768, 131072])
    ap.add_argument("--cap", type=int, default=256, help="tokens per call at most (the client's segment cap)")
    ap.add_argument("--min-calls", type=int, default=60, help="calls timed per length at least")
    ap.add_argument("--whole-sample", type=int, default=12, help="calls per length timed with the whole-sequence scan")
    args = ap.parse_args()
    tok = build_tokenizer()
    vocab, rules = server_vocab(tok), StructureRules()  # as the server builds it
    out: dict = {"cap": args.cap, "blocks": 64}
    for n in tqdm(args.lengths, desc="lengths"):
        for name, value in measure(n, args, tok, vocab, rules).items():
            out.setdefault(name, {})[str(n)] = value
    if {"1024", "32768"} <= out["per_call_ms"].keys():
        out["ratio_32k_1k"] = round(out["per_call_ms"]["32768"] / out["per_call_ms"]["1024"], 3)
        out["cold_ratio_32k_1k"] = round(out["per_call_cold_ms"]["32768"] / out["per_call_cold_ms"]["1024"], 3)
        if out["segment_ms"]["1024"] and out["segment_ms"]["32768"]:
            out["segment_ratio_32k_1k"] = round(out["segment_ms"]["32768"] / out["segment_ms"]["1024"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
