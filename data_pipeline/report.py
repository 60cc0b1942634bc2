"""The end-of-run report: counts per stage, failure reasons, the distance histogram (PNG) and structure stats.

Written to <out>/report.json and printed as tables. Everything here is derived from the journal (so a resumed
run reports on all samples), except `calls`, which counts this process's requests and cache hits.
"""
from __future__ import annotations

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


def reason_kind(reason: str) -> str:
    """A reason with its numbers and quoted parts blanked, so like reasons count together."""
    text = re.sub(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])|\"[^\"]*\"", "'…'", reason)
    return re.sub(r"\d+(?:\.\d+)?", "N", text)[:160]


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


def build(entries: list[dict[str, Any]], total: int, calls: dict[str, Any], structure: dict[str, Any],
          threshold: float, out_dir: Path) -> dict[str, Any]:
    distances = [e["distance"] for e in entries if e.get("distance") is not None]
    histogram(distances, threshold, out_dir / HISTOGRAM)
    ok = sum(e["status"] == "ok" for e in entries)
    report = {
        "samples": total,
        "converted": ok,
        "failed": len(entries) - ok,
        "missing": total - len(entries),
        "stages": stage_counts(entries),
        "reasons": failure_reasons(entries),
        "distance": {"threshold": threshold, "mean": round(sum(distances) / len(distances), 4) if distances else None,
                     "max": round(max(distances), 4) if distances else None, "histogram": HISTOGRAM},
        "calls": calls,
        "structure": structure,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
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
    console.print(f"calls: {json.dumps(report['calls'])}")
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
