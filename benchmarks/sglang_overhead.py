"""The SGLang plugin's own time per call, no server: nested traces' calls (as the client makes them) driven
through the plugin's functions in the order SGLang calls them (engine/sglang/plugin/replay.py): match_prefix
(layout resumed from the tree's scan states, a merge laid out from its children's states, masked check, merge
plan), the extend's positions, decode positions, the insert's states. Beside it, on a sample of the same calls,
the cost of scanning the whole sequence at match and at extend (what the plugin did before the scan states).

    python benchmarks/sglang_overhead.py [--lengths 1024 8192 32768 131072] [--cap 256] [--min-calls 60] [--repeats 5]

One trace shape for every length: 64 top-level blocks over ~128K tokens (nested 2 deep, up to 4 paths). The
figure for N tokens averages the calls made while the sequence holds N/2..N tokens, on the first N tokens of
as many seeds' traces as it takes to see --min-calls calls. The calls are of the same kinds but not in the same
mix: few blocks close in the first 1K tokens of these traces, and small ones. Every length is timed --repeats
times, the lengths interleaved (forward, then backward order) so that drift in the machine's load hits all
alike; each repeat replays the same calls.

Prints ONE JSON line: per_call_ms {N: median over repeats of the mean ms per call (match_prefix, merge, extend
positions, insert)} and per_call_ms_repeats (each repeat's mean); ratio_32k_1k, the median over repeats of that
repeat's 32K/1K ratio (paired: both lengths timed back to back), and ratio_32k_1k_repeats;
per_call_cold_ms, the same calls with the CPU caches flushed before each step (the stand-in tree and the call's
ids are O(N) lists that the replay walks between the plugin's steps, so a longer sequence leaves colder caches:
flushed, every length starts equal and what remains is the plugin's own work); p50_ms, p90_ms,
decode_us_per_token (the hook's per-step work), new_tokens (mean tokens a call decodes), scanned_tokens (mean
tokens the plugin's scan goes over per call: what it costs, free of timing noise), whole_scan_ms (the same calls
scanning everything), segment_ms (median over the full segments that are no merge: each scans exactly cap + 1
tokens, so every length times equal work; segment_calls of them per repeat), merge_calls and
merges_from_children (merges laid out from the children's stored states: they scan only their <Conclusion>
and what they decode), merge_scanned_tokens (null where no merge was timed), calls, seeds, cold_ratio_32k_1k,
segment_ratio_32k_1k.

What per_call_ms times is the plugin's functions only (replay.py stops the clock around the stand-in tree's
match and insert, and a merge's lookups of its children there, their keys included: the child's own sequence
is the O(N) key SGLang's match needs anyway). What still grows from 1K to 32K is equal work
running in colder caches beside a longer sequence (segment_ms; with the caches flushed, per_call_cold_ms, the
lengths come close): it depends on what else runs on the machine. Times are this thread's CPU time with
Python's garbage collector paused during the replay: on a loaded machine wall time counts other processes, and
collections triggered by the stand-in tree's allocations would land on whichever plugin call allocates next.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from engine.sglang.plugin.replay import Call, replay  # noqa: E402
from engine.sglang.plugin.structure import server_vocab  # noqa: E402
from multiverse.attention import StructureRules, layout  # noqa: E402
from multiverse.encode import encode_trace  # noqa: E402
from multiverse.synthetic import SyntheticShape, synthetic_trace  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402
from multiverse.tiny import build_tokenizer  # noqa: E402


@functools.lru_cache(maxsize=64)
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


def late_calls(n: int, args: argparse.Namespace, tok, vocab: StructureVocab, rules: StructureRules) -> tuple[list, int]:
    """Replay the first n tokens of seed after seed until min_calls calls at n/2..n tokens were timed: (those
    calls' Served, seeds used). The same seeds at every repeat: repeats time identical work."""
    late, seeds = [], 0
    while len(late) < args.min_calls:
        ids = nested_trace(seeds, tok)[:n]
        seeds += 1
        gc.collect()
        gc.disable()
        try:
            for s in replay(ids, vocab, rules, args.cap):
                if len(s.call.ids) > n // 2:  # keep the ids of a few calls only (for whole_scan): O(N) each
                    late.append(s if len(late) % 8 == 0 else replace(s, call=Call([], s.call.out)))
        finally:
            gc.enable()
    return late, seeds


def summary(n: int, repeats: list[list], seeds: int, args: argparse.Namespace, tok, vocab: StructureVocab,
            rules: StructureRules) -> dict:
    """The figures of one length: per_call_ms is the median over repeats of each repeat's mean; the rest pools
    the repeats' calls (the same calls each time)."""
    means = [statistics.fmean(s.seconds for s in rep) * 1e3 for rep in repeats]
    late = [s.seconds * 1e3 for rep in repeats for s in rep]
    calls = repeats[0]
    added = [len(s.call.out) for s in calls]
    segment = [s.seconds * 1e3 for rep in repeats for s in rep
               if s.plan is None and s.scanned == args.cap + 1 and len(s.call.out) == args.cap]
    merges = [s for s in calls if s.plan is not None]
    kept = [s for s in calls if s.call.ids]
    step = max(1, len(kept) // args.whole_sample)
    whole = [whole_scan(s.call.ids, vocab, rules) * 1e3 for s in kept[::step][: args.whole_sample]]
    gc.disable()
    try:
        cold_ms = cold(n, args, vocab, rules, tok)
    finally:
        gc.enable()
    return {
        "per_call_ms": round(statistics.median(means), 4),
        "per_call_ms_repeats": [round(m, 4) for m in means],
        "per_call_cold_ms": cold_ms,
        "p50_ms": round(statistics.median(late), 4),
        "p90_ms": round(statistics.quantiles(late, n=10)[-1], 4),
        "decode_us_per_token": round(sum(s.decode_seconds for s in calls) / max(sum(added), 1) * 1e6, 3),
        "new_tokens": round(statistics.fmean(added), 1),
        "scanned_tokens": round(statistics.fmean(s.scanned for s in calls), 1),
        "whole_scan_ms": round(statistics.fmean(whole), 3),
        "segment_ms": round(statistics.median(segment), 4) if segment else None,
        "segment_calls": len(segment) // len(repeats),
        "merge_calls": len(merges),
        "merges_from_children": sum(s.from_children for s in merges),
        "merge_scanned_tokens": round(statistics.fmean(s.scanned for s in merges), 1) if merges else None,
        "calls": len(calls),
        "seeds": seeds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768, 131072])
    ap.add_argument("--cap", type=int, default=256, help="tokens per call at most (the client's segment cap)")
    ap.add_argument("--min-calls", type=int, default=60, help="calls timed per length at least")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over every length, interleaved")
    ap.add_argument("--whole-sample", type=int, default=12, help="calls per length timed with the whole-sequence scan")
    args = ap.parse_args()
    tok = build_tokenizer()
    vocab, rules = server_vocab(tok), StructureRules()  # as the server builds it
    runs: dict[int, list[list]] = {n: [] for n in args.lengths}
    seeds: dict[int, int] = {}
    for r in tqdm(range(args.repeats), desc="repeats"):
        for n in args.lengths if r % 2 == 0 else args.lengths[::-1]:  # interleaved: drift hits every length alike
            late, seeds[n] = late_calls(n, args, tok, vocab, rules)
            runs[n].append(late)
    out: dict = {"cap": args.cap, "blocks": 64, "repeats": args.repeats}
    for n in tqdm(args.lengths, desc="extras"):
        for name, value in summary(n, runs[n], seeds[n], args, tok, vocab, rules).items():
            out.setdefault(name, {})[str(n)] = value
    if {1024, 32768} <= runs.keys():
        paired = [statistics.fmean(s.seconds for s in b) / statistics.fmean(s.seconds for s in a)
                  for a, b in zip(runs[1024], runs[32768])]
        out["ratio_32k_1k"] = round(statistics.median(paired), 3)  # median over repeats of each repeat's ratio
        out["ratio_32k_1k_repeats"] = [round(x, 3) for x in paired]
        out["cold_ratio_32k_1k"] = round(out["per_call_cold_ms"]["32768"] / out["per_call_cold_ms"]["1024"], 3)
        if out["segment_ms"]["1024"] and out["segment_ms"]["32768"]:
            out["segment_ratio_32k_1k"] = round(out["segment_ms"]["32768"] / out["segment_ms"]["1024"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
