"""`multiverse eval`: accuracy with standard errors, parallelism, budget control and paired speed.

    multiverse eval --tasks remainders --limit 20                      # the shipped default model on its own task
    multiverse eval --model PATH --tasks aime24,aime25 --preset paper --out runs/eval   # data ship in multiverse/data
    multiverse eval --backend openai --url http://127.0.0.1:8000/v1 --model PATH --tasks math500 --limit 50
    multiverse eval --model PATH --baseline-model AR_PATH --budgets 1024,2048,4096 --budget-kind critical ...
    multiverse eval --tasks mine.jsonl --field question=problem,answer=solution --task-kind word ...
    multiverse eval ... --resume runs/eval                          # after a kill: skips what is done
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from typing import Any

from multiverse.errors import UsageError, check_choices, check_model_path
from multiverse.evaluation.backends import BACKENDS
from multiverse.evaluation.protocol import PRESETS, SEQUENTIAL_SUFFIX, parse_budgets, resolve
from multiverse.evaluation.tasks import KINDS, TASKS

# settings that change no result, so a resume may change them: where the server is, how many requests are in
# flight, retries, decoded together (--batch-size), timed together; --threads and --no-progress are not settings
# (the KV pool's size changes how much runs at once, never a token: outputs do not depend on batching)
NEUTRAL = ("out", "resume", "progress", "url", "baseline_url", "concurrency", "max_retries", "speed_batch_size",
           "sglang", "num_pages", "kv_memory_fraction")  # sglang: the client's timeout, call size and retries
NEUTRAL_PROTOCOL = ("batch_size",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("model and backend")
    src.add_argument("--model", help="model directory or hub id (default: the tiny model shipped with the package); with "
                     "--backend openai: where the tokenizer comes from unless --tokenizer is given")
    src.add_argument("--tokenizer", help="tokenizer for counting tokens of returned text (openai backend)")
    src.add_argument("--backend", choices=BACKENDS, default="native", help="native: our engine; sglang: an SGLang server; openai: any OpenAI-compatible server")
    src.add_argument("--url", help="server base URL (openai: e.g. http://127.0.0.1:8000/v1; sglang: the SGLang server)")
    src.add_argument("--served-model", help="model name on the server (default: the first it lists)")
    src.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "EMPTY"), help="openai: the server's key (default: $OPENAI_API_KEY)")
    src.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight (the next is sent as one finishes)")
    src.add_argument("--max-retries", type=int, default=3, help="openai: retries per request (with backoff)")
    src.add_argument("--request-extra", help='openai: JSON merged into every request (default {"skip_special_tokens": false})')
    src.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the model's)")
    from engine.backend import add_client_arguments

    add_client_arguments(src)
    from engine.kv_memory import add_kv_arguments

    add_kv_arguments(src)  # native backend: the engine's KV pool
    data = parser.add_argument_group("tasks")
    data.add_argument("--tasks", default="remainders", help=f"comma-separated names ({', '.join(TASKS)}) and/or .jsonl/.parquet files")
    data.add_argument("--field", help="for task files: question=COLUMN,answer=COLUMN[,id=COLUMN]")
    data.add_argument("--task-kind", choices=KINDS, default="math", help="for task files (word: last number accepted)")
    data.add_argument("--data-dir", help="directory with your own copies of the task files (default: the copies in "
                      "multiverse/data, else the hub)")
    data.add_argument("--limit", type=int, help="first N questions per task")
    proto = parser.add_argument_group("protocol (flags win over --preset)")
    proto.add_argument("--preset", choices=list(PRESETS), default="none", help="paper: avg@16, T=0.6, top-p 0.95, critical budget")
    proto.add_argument("--samples", type=int, help="generations per question (avg@k, pass@k, cons@k)")
    proto.add_argument("--temperature", type=float, help="0 decodes greedily (default 0, or the preset's)")
    proto.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1] (default 1, or the preset's)")
    proto.add_argument("--max-new-tokens", type=int, help="token budget over all branches (cost) (default: 4096, or the preset's)")
    proto.add_argument("--max-critical-tokens", type=int, help="budget along the critical path (latency)")
    proto.add_argument("--suffix", help="appended to each question ('' for none)")
    proto.add_argument("--system-prompt", help="a system message before each question (plain prompts: a paragraph before it)")
    proto.add_argument("--no-chat", action="store_true", help="plain prompts, no chat template")
    proto.add_argument("--seed", type=int, help="base of the per-sample seeds, derived from (task, id, sample)")
    proto.add_argument("--batch-size", type=int, help="native: generations in flight (the next starts as one finishes; default 8)")
    from engine import controls

    controls.add_arguments(parser)
    parser.add_argument("--sweep", metavar="NAME=V1,V2,...", help="one run per value of a decoding control, e.g. "
                        "fork_threshold=0.5,0.7,0.9,0.95 (also fork_bias, path_factor, max_concurrent_paths): "
                        "a table and a PNG of accuracy against degree of parallelism")
    sweep = parser.add_argument_group("budget control")
    sweep.add_argument("--budgets", help="e.g. 1024,2048,4096: one run per budget, accuracy plotted against budget")
    sweep.add_argument("--budget-kind", choices=("critical", "total"), default="critical", help="critical: max_critical_tokens (latency); total: max_new_tokens (cost)")
    sweep.add_argument("--baseline-model", help="an autoregressive model run side by side (decoded without forks): "
                       "evaluated next to the model, swept with --budgets, the sequential side of --compare-sequential")
    sweep.add_argument("--baseline-url", help="openai backend: the server of the baseline model")
    sweep.add_argument("--baseline-forks", action="store_true", help="decode --baseline-model with forks: an earlier "
                       "Multiverse model (e.g. a training chain's starting point), so --compare-sequential measures "
                       "the speedup over it")
    sweep.add_argument("--baseline-suffix", help="the suffix the baseline's questions get (default: --suffix unless it is the "
                       "parallel suffix, else the task's own, e.g. none for remainders, else "
                       f"'{SEQUENTIAL_SUFFIX}')")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--compare-sequential", action="store_true", help="ABBA-paired wall-clock runs, both sides graded: "
                       "against --baseline-model (a speedup), else this model with forks off (a ratio, not a baseline)")
    speed.add_argument("--speed-rounds", type=int, default=2, help="rounds per question (even: ABBA balanced)")
    speed.add_argument("--speed-questions", type=int, default=8, help="first N questions timed")
    speed.add_argument("--speed-batch-size", type=int, default=1, help="questions decoded together per timed run")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="eval_out", help="directory for records.jsonl, summary.json, plots")
    out.add_argument("--resume", metavar="DIR", help="continue the run in DIR: finished samples are skipped")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def check_args(args: argparse.Namespace) -> None:
    """Every flag, task name and path, before torch or the grader is imported (multiverse.cli calls this first)."""
    args.settings = resolve_settings(args)


def run(args: argparse.Namespace) -> int:
    from multiverse.evaluation.session import Session
    from multiverse.evaluation.sources import load_problems

    settings = getattr(args, "settings", None) or resolve_settings(args)
    problems, data = load_problems(settings)  # a task that cannot be read fails here: nothing written yet
    out_dir = prepare_out(args, settings)
    return Session(settings, out_dir, args.progress, args.api_key).run(problems, data)


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of the run, checked before any slow work (bad input raises UsageError naming the flag)."""
    from multiverse.demo import DEFAULT_MODEL
    from multiverse.evaluation.tasks import is_file_task, parse_fields

    specs = [s.strip() for s in args.tasks.split(",") if s.strip()]
    if not specs:
        raise UsageError("--tasks: give at least one task")
    for spec in specs:
        if is_file_task(spec):
            if not os.path.isfile(spec):
                raise UsageError(f"--tasks {spec}: no such file")
    check_choices("--tasks", [s for s in specs if not is_file_task(s)], list(TASKS))  # or a .jsonl/.parquet file
    from multiverse.evaluation.sources import check_reachable

    check_reachable([s for s in specs if not is_file_task(s)], args.data_dir)
    fields = parse_fields(args.field) if args.field else None
    if fields and not any(is_file_task(s) for s in specs):
        raise UsageError("--field applies to task files (--tasks FILE.jsonl)")
    given = {"samples": args.samples, "temperature": args.temperature, "top_p": args.top_p,
             "max_new_tokens": args.max_new_tokens, "max_critical_tokens": args.max_critical_tokens,
             "suffix": args.suffix, "chat": False if args.no_chat else None, "seed": args.seed, "batch_size": args.batch_size,
             "system_prompt": args.system_prompt}
    from engine import controls

    try:
        given["controls"] = controls.from_arguments(args)
        sweep = None
        if args.sweep:  # its module imports the runner: only when asked for
            from multiverse.evaluation.control_sweep import parse_sweep

            sweep = parse_sweep(args.sweep)
        protocol = resolve(args.preset, given)
        budgets = parse_budgets(args.budgets) if args.budgets else None
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from err
    model = args.model or str(DEFAULT_MODEL)
    if args.backend != "openai" or not args.tokenizer:  # the model's weights, or (openai) its tokenizer
        check_model_path(model, "--model")
    if args.baseline_model and args.backend != "openai":
        check_model_path(args.baseline_model, "--baseline-model")
    if args.backend in ("openai", "sglang") and not args.url:
        raise UsageError(f"--backend {args.backend} needs --url")
    if args.baseline_model and args.backend == "openai" and not args.baseline_url:
        raise UsageError("--baseline-model with --backend openai needs --baseline-url (the server of the baseline)")
    if args.backend == "sglang":
        check_sglang_controls(protocol, sweep)
    if sweep and budgets:
        raise UsageError("--sweep and --budgets: one sweep per run")
    if args.baseline_forks and not args.baseline_model:
        raise UsageError("--baseline-forks decodes --baseline-model with forks: give --baseline-model")
    if args.compare_sequential and args.backend == "openai":
        raise UsageError("--compare-sequential needs --backend native or sglang (a server decodes as it was started)")
    for flag, value, low in (("--limit", args.limit, 1), ("--concurrency", args.concurrency, 1),
                             ("--speed-rounds", args.speed_rounds, 1), ("--speed-questions", args.speed_questions, 1),
                             ("--speed-batch-size", args.speed_batch_size, 1),
                             ("--max-retries", args.max_retries, 0)):
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be >= {low}")
    from engine.backend import client_options

    sglang = client_options(args)  # timeouts and call sizes: how the run is driven, not what it computes
    from engine.kv_memory import kv_options

    kv = kv_options(args)
    if kv and args.backend != "native":
        raise UsageError("--num-pages and --kv-memory-fraction size the native engine's KV pool (--backend native)")
    try:
        extra = json.loads(args.request_extra) if args.request_extra else None
    except json.JSONDecodeError as err:
        raise UsageError(f"--request-extra: not JSON ({err.msg})") from err
    return {
        "tasks": specs, "field": fields, "task_kind": args.task_kind, "data_dir": args.data_dir, "limit": args.limit,
        "backend": args.backend, "model": model, "tokenizer": args.tokenizer, "url": args.url,
        "served_model": args.served_model, "concurrency": args.concurrency, "max_retries": args.max_retries,
        "request_extra": extra, "device": args.device,
        "num_pages": args.num_pages, "kv_memory_fraction": args.kv_memory_fraction, "preset": args.preset, "protocol": asdict(protocol),
        "budgets": budgets, "budget_kind": args.budget_kind, "sweep": sweep, "baseline_model": args.baseline_model,
        "baseline_url": args.baseline_url, "baseline_suffix": args.baseline_suffix, "baseline_forks": args.baseline_forks or None,  # None when off: a run from before the flag resumes
        "compare_sequential": args.compare_sequential, "speed_rounds": args.speed_rounds,
        "speed_questions": args.speed_questions, "speed_batch_size": args.speed_batch_size, "sglang": sglang,
    }


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that can change a result (what a resume must keep)."""
    out = {k: v for k, v in settings.items() if k not in NEUTRAL}
    if isinstance(out.get("protocol"), dict):
        out["protocol"] = {k: v for k, v in out["protocol"].items() if k not in NEUTRAL_PROTOCOL}
    return out


def prepare_out(args: argparse.Namespace, settings: dict[str, Any]) -> str:
    """The output directory; a resume must use the settings the run started with."""
    out_dir = args.resume or args.out
    config_path = os.path.join(out_dir, "config.json")
    if args.resume:
        if not os.path.isfile(config_path):
            raise UsageError(f"--resume {out_dir}: no config.json there (not a multiverse eval directory)")
        with open(config_path, encoding="utf-8") as f:
            stored = json.load(f)["settings"]
        old, new = result_settings(stored), result_settings(settings)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise UsageError(f"--resume {out_dir}: the run was started with other settings ({', '.join(changed)}); "
                             "give the same flags, or a new --out")
        return out_dir
    if os.path.exists(os.path.join(out_dir, "records.jsonl")) or os.path.isdir(os.path.join(out_dir, "model")):
        raise UsageError(f"--out {out_dir}: holds an earlier run; continue it with --resume {out_dir}, or choose another --out")
    from multiverse.evaluation.provenance import write_json

    os.makedirs(out_dir, exist_ok=True)
    write_json(config_path, {"settings": settings, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return out_dir


def check_sglang_controls(protocol: Any, sweep: dict[str, Any] | None) -> None:
    """The controls the SGLang client refuses (engine/sglang/client.py), at every sweep point, before loading."""
    from engine.params import SamplingParams
    from engine.sglang.client import refuse_controls
    from multiverse.evaluation.control_sweep import at_value

    points = [{**protocol.controls, **at_value(sweep["name"], v)} for v in sweep["values"]] if sweep else [protocol.controls]
    for point in points:
        try:
            refuse_controls(SamplingParams(temperature=protocol.temperature, **point))
        except ValueError as err:
            raise UsageError(f"--backend sglang: {err}") from err
