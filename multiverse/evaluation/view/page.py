"""One self-contained HTML page of a `multiverse eval` run: no server, no network, CSS, JS and plots inline.

Sections: the run (model, backend, commit, data), warnings, the summary table per side (the model, the
baseline, each budget of a sweep) and task, the paired speed, the plots (base64 PNGs), then every sample: its
question, grade and branch tree (tree.py), filterable by correct / wrong / forked and by side (static/page.js).
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any

from multiverse.errors import UsageError
from multiverse.evaluation.grading import special_tokens
from multiverse.evaluation.records import RecordFile
from multiverse.evaluation.report import summarise
from multiverse.evaluation.view import plots, tree


@dataclass(frozen=True)
class Run:
    path: str
    settings: dict[str, Any]
    summary: dict[str, Any]  # summary.json ({} while the run is unfinished)
    sides: dict[str, list[dict[str, Any]]]  # "model", "baseline", "model @ 64", ...: records


def load_run(run_dir: str) -> Run:
    if not os.path.isdir(run_dir):
        raise UsageError(f"{run_dir}: no such directory")
    config = _json(os.path.join(run_dir, "config.json"))
    files = sorted(glob.glob(os.path.join(run_dir, "**", "records.jsonl"), recursive=True))
    if not config or not files:
        raise UsageError(f"{run_dir}: not a multiverse eval run (needs config.json and records.jsonl)")
    sides = {}
    for path in sorted(files, key=lambda f: os.path.dirname(f) != run_dir.rstrip(os.sep)):  # the model's first
        rel = os.path.relpath(os.path.dirname(path), run_dir)
        name = "model" if rel == "." else rel.replace(os.sep + "budget-", " @ ").replace(os.sep, " ")
        sides[name] = sorted(RecordFile(path).records, key=_order)
    return Run(run_dir, config.get("settings", {}), _json(os.path.join(run_dir, "summary.json")) or {}, sides)


def _order(record: dict[str, Any]) -> tuple[Any, ...]:
    """Task, then id in natural order (remainders-2 before remainders-10), then sample."""
    parts = re.split(r"(\d+)", str(record["id"]))
    return record["task"], [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts], int(record["sample"])


def _json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ruler_for(settings: dict[str, Any]) -> tuple[Any, tree.Ruler]:
    """(tokenizer, ruler): tokens of a text with the run's tokenizer; characters when it cannot be loaded."""
    name = settings.get("tokenizer") or settings.get("model")
    try:
        from multiverse.tokens import load_tagged_tokenizer

        tok = load_tagged_tokenizer(name)
    except Exception:  # noqa: BLE001 - a moved model, no transformers: characters stand in
        return None, tree.Ruler(len, "characters")
    return tok, tree.Ruler(lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0)


def build(run: Run) -> str:
    samples = int(run.settings.get("protocol", {}).get("samples", 1))
    tok, ruler = ruler_for(run.settings)
    specials = special_tokens(tok) if tok is not None else ("<|im_end|>", "<|endoftext|>")
    summaries = {side: summarise(recs, samples) for side, recs in run.sides.items() if recs}
    main = run.sides.get("model") or next(iter(run.sides.values()))
    images = [("overview", plots.overview(summaries, main, samples))] if main else []
    images += plots.run_pngs(run.path)
    every = [(side, r) for side, recs in run.sides.items() for r in recs]
    first = next((i for i, (_, r) in enumerate(every) if r["forks"] > 0), 0)  # opened: the first that forked
    cards = "".join(_sample(side, r, ruler, specials, opened=i == first) for i, (side, r) in enumerate(every))
    static = resources.files("multiverse.evaluation.view") / "static"
    return PAGE.format(
        title=escape(os.path.basename(os.path.normpath(run.path)) or run.path),
        css=(static / "page.css").read_text(encoding="utf-8"),
        js=(static / "page.js").read_text(encoding="utf-8").replace("</", "<\\/"),
        meta=_meta(run),
        warnings="".join(f"<li>{escape(w)}</li>" for w in run.summary.get("warnings", [])) or "<li>none</li>",
        table=_table(summaries, samples),
        speed=_speed(run.summary.get("speed")),
        plots="".join(f'<img alt="{escape(name)}" title="{escape(name)}" src="{uri}">' for name, uri in images),
        sides="".join(f'<option value="{escape(s)}">{escape(s)} ({len(r)})</option>' for s, r in run.sides.items()),
        samples=cards,
    )


def _meta(run: Run) -> str:
    s, summ = run.settings, run.summary
    harness = summ.get("harness", {})
    data = "; ".join(f"{t}: {d.get('source')} {str(d.get('sha256') or d.get('revision') or '')[:12]}"
                     for t, d in (summ.get("data") or {}).items())
    bits = [f"model {s.get('model')}", f"backend {s.get('backend')}", f"tasks {', '.join(s.get('tasks', []))}",
            f"harness {str(harness.get('commit') or '?')[:10]}{' (dirty)' if harness.get('dirty') else ''}",
            f"data {data or '?'}", f"finished {summ.get('finished', 'no (partial run)')}"]
    return " · ".join(escape(b) for b in bits)


def _est(e: dict[str, Any] | None, digits: int = 3) -> str:
    return "-" if not e else f"{e['mean']:.{digits}f} ± {e['se']:.{digits}f}"


def _table(summaries: dict[str, dict[str, Any]], samples: int) -> str:
    key = f"avg@{samples}"
    head = ("<tr><th>side</th><th>task</th><th>questions</th><th>samples</th><th>" + key + "</th><th>95% CI (Wilson)</th>"
            "<th>tokens</th><th>critical path</th><th>parallelism</th><th>forked</th><th>valid</th><th>truncated</th></tr>")
    rows = []
    for side, per_task in summaries.items():
        for task, s in per_task.items():
            lo, hi = s[key]["ci95"]
            rows.append(
                f"<tr><td>{escape(side)}</td><td>{escape(task)}</td><td>{s['questions']}</td><td>{s['samples']}</td>"
                f"<td>{_est(s[key])}</td><td>[{lo:.3f}, {hi:.3f}]</td><td>{_est(s['generated_tokens'], 0)}</td>"
                f"<td>{_est(s['critical_path'], 0)}</td><td>{_est(s['degree_of_parallelism'], 2)}</td>"
                f"<td>{_est(s['forked'], 2)}</td><td>{_est(s['valid'], 2)}</td><td>{_est(s['truncated'], 2)}</td></tr>")
    return f'<table class="summary">{head}{"".join(rows)}</table>'


def _speed(speed: dict[str, Any] | None) -> str:
    if not speed:
        return "<p>not measured (--compare-sequential)</p>"
    ratio = speed.get("wall_ratio")
    name = "speedup over the baseline" if speed.get("sequential_side") == "baseline" else "forks-off / forks-on ratio (not a speedup)"
    shown = "none (never forked)" if not ratio else f"{ratio['median']:.2f}x [quartiles {ratio['q25']:.2f}-{ratio['q75']:.2f}, n={ratio['n']}]"
    acc = speed.get("accuracy", {})
    note = f"<p>{escape(speed['note'])}</p>" if speed.get("note") else ""
    return (f"<p>{speed['pairs']} ABBA pairs at batch {speed.get('batch_size', 1)}; {escape(name)}: {escape(shown)}; "
            f"answers correct: parallel {acc.get('parallel', float('nan')):.3f}, sequential side "
            f"{acc.get('sequential', float('nan')):.3f}</p>{note}")


def question_of(record: dict[str, Any]) -> str:
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return str(prompt or "")


def _sample(side: str, r: dict[str, Any], ruler: tree.Ruler, specials: Any, opened: bool = False) -> str:
    ok = bool(r["correct"])
    grade = '<span class="ok">correct</span>' if ok else '<span class="bad">wrong</span>'
    pills = "".join(f'<span class="pill">{escape(p)}</span>' for p in (
        side, f"forks {r['forks']}", f"critical {r['critical_path']}", f"tokens {r['generated_tokens']}",
        f"parallelism {r['degree_of_parallelism']:.2f}", r["finish_reason"], f"method {r['method']}"))
    head = (f"{escape(r['task'])}/{escape(str(r['id']))} #{r['sample']} {grade}: "
            f"{escape(str(r.get('predicted')))} (gold {escape(str(r.get('gold')))}){pills}")
    return (f'<details class="sample" data-correct="{int(ok)}" data-forked="{int(r["forks"] > 0)}" '
            f'data-side="{escape(side)}"{" open" if opened else ""}><summary>{head}</summary>'
            f'<div class="question">{escape(question_of(r))}</div>'
            f'{tree.render(r["raw_text"], specials, ruler)}'
            f'<details><summary>raw text</summary><pre class="text">{escape(r["raw_text"])}</pre></details></details>')


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>multiverse eval: {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>
<body>
<h1>multiverse eval: {title}</h1>
<div class="meta">{meta}</div>
<h2>Warnings</h2><ul class="warnings">{warnings}</ul>
<h2>Summary (mean ± standard error over questions)</h2>{table}
<h2>Speed</h2>{speed}
<h2>Plots</h2><div class="plots">{plots}</div>
<h2>Samples (<span id="shown">?</span> shown of <span id="total">?</span>)</h2>
<div class="filters">
<button data-filter="all">all <span class="count">?</span></button>
<button data-filter="correct">correct <span class="count">?</span></button>
<button data-filter="wrong">wrong <span class="count">?</span></button>
<button data-filter="forked">forked <span class="count">?</span></button>
<button data-filter="unforked">not forked <span class="count">?</span></button>
<select id="side"><option value="all">every side</option>{sides}</select>
<span class="meta">critical path: the orange paths (in each block, the longest; token counts beside each path)</span>
</div>
{samples}
<script>{js}</script>
</body></html>
"""
