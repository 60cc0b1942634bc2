"""Structure statistics of Multiverse traces, ours or the reference's (`multiverse curate --stats FILE`).

Per trace: blocks, paths per block, nesting depth, tokens inside paths vs outside, and the data's degree of
parallelism = tokens / critical path (SPEC §7), where the critical path is the largest RoPE position + 1 from
`multiverse.attention.position_ids` over `multiverse.encode.encode_trace` ids of the target tokenizer.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from multiverse.structure import StructureError, parse
from multiverse.structure.tree import _walk_top
from multiverse.tags import TagIds

PARALLEL_FIELD = "deepseek_thinking_trajectory_parallel"


@dataclass(frozen=True)
class TraceStats:
    blocks: int
    paths_per_block: tuple[int, ...]
    depth: int  # deepest nesting (0: no block)
    tokens: int
    path_tokens: int  # tokens from a <Path> to its </Path>, at any depth
    critical: int  # largest position + 1

    @property
    def parallelism(self) -> float:
        return self.tokens / max(self.critical, 1)


def trace_stats(text: str, tokenizer: Any) -> TraceStats:
    """Statistics of one trace. Raises StructureError when it does not parse."""
    from multiverse.attention import position_ids  # torch: only when a trace is measured
    from multiverse.encode import encode_trace

    doc = parse(text)
    blocks = list(doc.blocks())
    ids = encode_trace(text, tokenizer)
    positions = position_ids(ids, tokenizer) if ids else None
    return TraceStats(
        blocks=len(blocks),
        paths_per_block=tuple(len(b.paths) for b in blocks),
        depth=max((b.depth() for b in _walk_top(doc.children)), default=0),
        tokens=len(ids),
        path_tokens=_path_tokens(ids, TagIds.from_tokenizer(tokenizer)),
        critical=int(positions.max()) + 1 if positions is not None else 0,
    )


def as_record(stats: TraceStats) -> dict[str, Any]:
    """JSON form of one trace's statistics (kept in the journal so a resume does not tokenize again)."""
    return {f: getattr(stats, f) for f in TraceStats.__dataclass_fields__}


def from_record(record: dict[str, Any]) -> TraceStats:
    values = {f: record[f] for f in TraceStats.__dataclass_fields__}
    return TraceStats(**values | {"paths_per_block": tuple(values["paths_per_block"])})


def _path_tokens(ids: list[int], tags: TagIds) -> int:
    inside, count = 0, 0
    for t in ids:
        if t == tags.path_open:
            inside += 1
        count += inside > 0
        if t == tags.path_close:
            inside -= 1
    return count


def summarise(stats: list[TraceStats], errors: int = 0) -> dict[str, Any]:
    """Aggregates over traces; `parallelism` per sample (mean, median, ...) and pooled over all tokens."""
    if not stats:
        return {"traces": 0, "unparsable": errors}
    dop = [s.parallelism for s in stats]
    paths = [p for s in stats for p in s.paths_per_block]
    tokens = sum(s.tokens for s in stats)
    return {
        "traces": len(stats),
        "unparsable": errors,
        "blocks_per_trace": _describe([s.blocks for s in stats]),
        "paths_per_block": _describe(paths) | {"histogram": dict(sorted(Counter(paths).items()))},
        "nesting_depth": dict(sorted(Counter(s.depth for s in stats).items())),
        "tokens": tokens,
        "tokens_in_paths": sum(s.path_tokens for s in stats),
        "fraction_in_paths": round(sum(s.path_tokens for s in stats) / max(tokens, 1), 4),
        "parallelism": _describe(dop) | {"pooled": round(tokens / max(sum(s.critical for s in stats), 1), 4)},
    }


def _describe(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {"mean": round(statistics.fmean(values), 4), "median": round(float(statistics.median(values)), 4),
            "min": round(float(min(values)), 4), "max": round(float(max(values)), 4)}


def read_traces(paths: Iterable[str | Path], field: str | None = None) -> list[tuple[str, str]]:
    """(name, trace) pairs: each row of a .jsonl (the parallel field), or each other file as one trace."""
    out: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        row = json.loads(line)
                        key = field or PARALLEL_FIELD
                        if key not in row:
                            raise ValueError(f"{path}, line {n}: no field {key!r} (fields: {', '.join(row)})")
                        out.append((f"{path}:{n}", row[key]))
        else:
            out.append((str(path), path.read_text(encoding="utf-8")))
    return out


def stats_of(traces: list[tuple[str, str]], tokenizer: Any) -> tuple[dict[str, Any], list[str]]:
    """The summary and one message per trace that does not parse."""
    stats, problems = [], []
    for name, text in traces:
        try:
            stats.append(trace_stats(text, tokenizer))
        except StructureError as err:
            problems.append(f"{name}: {err}")
    return summarise(stats, len(problems)), problems
