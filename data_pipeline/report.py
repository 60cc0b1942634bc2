"""The end-of-run report: counts per stage, failure reasons, tokens and cost, the distance histogram (PNG) and
structure stats.

Written to <out>/report.json and printed as tables. Everything here is derived from the journal (so a resumed
run reports on all samples of the selection), except `calls`, which counts this process's requests, cache
hits and tokens. `tokens` sums each sample's replies (cached ones included: what the data cost to make).
The fingerprint pins the settings, so `distance.threshold` is the one every row was checked against.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

STAGES = ("input", "steps", "dependencies", "rewrite", "checks", "internal")
HISTOGRAM = "distance_histogram.png"


def stage_counts(entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per stage: samples that passed it, failed in it, and needed more than one attempt."""
    out = {s: {"passed": 0, "failed": 0, "regenerated": 0} for s in STAGES}
    for e in entries:
        failed_at = None if e["status"] == "ok" else e["stage"]
        for stage in STAGES:
            if stage == failed_at:
                out[stage]["failed"] += 1
                break
            out[stage]["passed"] += 1
        for stage, n in e.get("attempts", {}).items():
            out[stage]["regenerated"] += n > 1
    return out


_QUOTED = re.compile(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])|\"[^\"]*\"|`[^`]*`|\{\{[^}]*\}\}")


def reason_kind(reason: str) -> str:
    """A reason with the numbers outside quotes blanked, so like reasons count together; quoted names
    ('S7', "goal", {{placeholder}}) stay, so distinct causes stay distinct."""
    parts, at = [], 0
    for m in _QUOTED.finditer(reason):
        parts += [re.sub(r"\d+(?:\.\d+)?", "N", reason[at:m.start()]), m.group()]
        at = m.end()
    parts.append(re.sub(r"\d+(?:\.\d+)?", "N", reason[at:]))
    return "".join(parts)[:160]


def failure_reasons(entries: list[dict[str, Any]]) -> dict[str, Any]:
    rejected = Counter(reason_kind(r["reason"]) for e in entries for r in e.get("reasons", []))
    final = Counter(f"{e['stage']}: {reason_kind(_cause(e))}" for e in entries if e["status"] != "ok")
    return {"failed_samples": dict(final.most_common()), "all_rejections": dict(rejected.most_common(20))}


def _cause(entry: dict[str, Any]) -> str:
    """Why a sample failed: the last rejection behind an exhausted stage, else the final reason itself."""
    final = entry["reasons"][-1]["reason"] if entry.get("reasons") else "no reason recorded"
    marker = " (last reason: "
    return final.split(marker, 1)[1][:-1] if marker in final else final


def histogram(distances: list[float], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(distances, bins=[i / 50 for i in range(int(max([threshold, *distances]) * 50) + 2)], color="#4477aa")
    ax.axvline(threshold, color="#cc3311", linestyle="--", label=f"threshold {threshold}")
    ax.set_xlabel("content distance (sequential twin vs original)")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read(out_dir: Path) -> dict[str, Any]:
    """The folder's previous report ({} when there is none or it is unreadable)."""
    try:
        return json.loads((Path(out_dir) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write(report: dict[str, Any], out_dir: Path) -> None:
    path = Path(out_dir) / "report.json"
    tmp = path.with_name(".report.json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def tokens(entries: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    from data_pipeline.estimate import cost

    used = Counter()
    for e in entries:
        used.update(e.get("usage", {}))
    prompt, completion = used["prompt_tokens"], used["completion_tokens"]
    return {"calls": used["calls"], "prompt_tokens": prompt, "completion_tokens": completion,
            "cost": cost(prompt, completion, cfg)}


def outputs_digest(out_dir: Path) -> str:
    """A hash of curated.jsonl and failed.jsonl: equal digests mean the dataset and histogram are current."""
    h = hashlib.sha256()
    for name in ("curated.jsonl", "failed.jsonl"):
        h.update((Path(out_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def build(entries: list[dict[str, Any]], total: int, calls: dict[str, Any], structure: dict[str, Any],
          cfg: Any, previous: dict[str, Any]) -> dict[str, Any]:
    """The report of the entries (in input order) of `total` selected samples, written to report.json."""
    out_dir, threshold = cfg.out_dir, cfg.checks.max_distance
    distances = [e["distance"] for e in entries if e.get("distance") is not None]
    digest = outputs_digest(out_dir)
    if digest != previous.get("outputs") or not (out_dir / HISTOGRAM).exists():
        histogram(distances, threshold, out_dir / HISTOGRAM)
    ok = sum(e["status"] == "ok" for e in entries)
    fp = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))["fingerprint"]
    report = {
        "samples": total,
        "converted": ok,
        "failed": len(entries) - ok,
        "missing": total - len(entries),
        "stages": stage_counts(entries),
        "reasons": failure_reasons(entries),
        "distance": {"threshold": threshold, "mean": round(sum(distances) / len(distances), 4) if distances else None,
                     "max": round(max(distances), 4) if distances else None, "histogram": HISTOGRAM},
        "tokens": tokens(entries, cfg),
        "calls": calls,
        "structure": structure,
        "selection": {"offset": cfg.input.offset, "limit": cfg.input.limit, "shard": cfg.input.shard},
        "fingerprint": fp,
        "outputs": digest,
    }
    write(report, out_dir)
    return report


def show(report: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]curated {report['converted']} of {report['samples']} samples[/bold] "
                  f"({report['failed']} failed, {report['missing']} missing)")
    table = Table("stage", "passed", "failed", "regenerated", title="samples per stage")
    for stage, c in report["stages"].items():
        if stage == "internal" and not c["failed"]:
            continue
        table.add_row(stage, str(c["passed"]), str(c["failed"]), str(c["regenerated"]))
    console.print(table)
    reasons = report["reasons"]["failed_samples"]
    if reasons:
        t = Table("count", "why samples failed", title="failure reasons")
        for why, n in reasons.items():
            t.add_row(str(n), why)
        console.print(t)
    d = report["distance"]
    console.print(f"content distance (last assembled trace of every sample that got that far): mean {d['mean']}, "
                  f"max {d['max']} (threshold {d['threshold']}); histogram: {d['histogram']}")
    t = report["tokens"]
    cost = f", cost {t['cost']}" if t.get("cost") is not None else ""
    console.print(f"tokens (every sample's replies, cached ones included): prompt {t['prompt_tokens']}, "
                  f"completion {t['completion_tokens']} in {t['calls']} replies{cost}")
    console.print(f"calls (this process): {json.dumps(report['calls'])}")
    if "push" in report:
        console.print(f"push_to_hub {report['push']['repo']}: {'ok' if report['push']['ok'] else 'FAILED'}")
    show_structure(report["structure"], console)


def show_structure(s: dict[str, Any], console: Console) -> None:
    if not s.get("traces"):
        console.print(f"structure: {s.get('skipped', 'no parsable traces')}")
        return
    t = Table("statistic", "value", title=f"structure of {s['traces']} traces")
    p = s["parallelism"]
    t.add_row("degree of parallelism (tokens / critical path)",
              f"mean {p['mean']}, median {p['median']}, min {p['min']}, max {p['max']}, pooled {p['pooled']}")
    t.add_row("blocks per trace", _fmt(s["blocks_per_trace"]))
    t.add_row("paths per block", _fmt(s["paths_per_block"]) + f"; {s['paths_per_block']['histogram']}")
    t.add_row("nesting depth (traces)", str(s["nesting_depth"]))
    t.add_row("tokens in paths / all", f"{s['tokens_in_paths']} / {s['tokens']} ({s['fraction_in_paths']:.1%})")
    if s.get("unparsable"):
        t.add_row("unparsable traces", str(s["unparsable"]))
    console.print(t)


def _fmt(d: dict[str, Any]) -> str:
    return f"mean {d['mean']}, median {d['median']}, min {d['min']}, max {d['max']}"


def show_estimate(e: dict[str, Any], console: Console) -> None:
    """The --dry-run summary."""
    t = Table("estimate (dry run, no request sent)", "value")
    t.add_row("samples to curate / selected", f"{e['samples']} / {e['selected']}")
    t.add_row("calls (no regenerations) / upper bound", f"{e['calls']} / {e['calls_upper_bound']}")
    t.add_row("prompt tokens", str(e["prompt_tokens"]))
    t.add_row("completion tokens", str(e["completion_tokens"]))
    t.add_row("cost", "set llm.prompt_price / completion_price" if e["cost"] is None else str(e["cost"]))
    console.print(t)
