"""`multiverse curate`: run (or resume) a curation from a YAML config, or print --stats of trace files."""
from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console

from multiverse.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="the run's configuration (see data_pipeline/README.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set run.concurrency=32 (repeatable)")
    parser.add_argument("--stats", nargs="+", metavar="FILE",
                        help="only compute structure statistics of these files (.jsonl rows, or one trace per file)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for --stats (hub name or path; default: the config's, else the built-in tiny one)")
    parser.add_argument("--field", default=None, help="the trace column of .jsonl files for --stats")
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON line on stdout")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration (YAML), stop")
    run = parser.add_argument_group("run control (exit code: 0 when every selected sample converted, else 1)")
    run.add_argument("--dry-run", action="store_true", help="estimate calls, tokens and cost; send no request")
    run.add_argument("--restart", action="store_true",
                     help="move the folder's earlier run to replaced-N/ and start anew (needed when settings changed)")
    run.add_argument("--retry-failed", action="store_true", help="curate the samples that failed again, asking afresh")
    run.add_argument("--allow-failed", action="store_true", help="exit 0 even when some samples failed")
    run.add_argument("--shard", metavar="I/N", help="only the samples at positions p with p %% N == I (input.shard)")
    run.add_argument("--offset", type=int, metavar="N", help="skip the first N input rows (input.offset)")
    run.add_argument("--limit", type=int, metavar="N", help="then take at most N rows (input.limit)")


def check_args(args: argparse.Namespace) -> None:
    """The files, before anything heavy is imported (the config's values: load_config, in run)."""
    for name in args.stats or []:
        if not os.path.isfile(name):
            raise UsageError(f"--stats {name}: no such file")
    if args.config and not os.path.isfile(args.config):
        raise UsageError(f"--config {args.config}: no such file")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if args.stats:
        return _stats(args, console)
    if not args.config and not args.print_config:
        raise UsageError("give --config FILE.yaml (or --stats FILE ...)")
    from data_pipeline.config import load_config
    from multiverse.config_io import dump

    # a ConfigError is a usage error: one line, exit 2
    cfg = load_config(args.config, [*args.overrides, *_selection(args)])
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    from data_pipeline.pipeline import RunOptions
    from data_pipeline.pipeline import run as run_pipeline
    from data_pipeline.report import show, show_estimate

    options = RunOptions(dry_run=args.dry_run, restart=args.restart, retry_failed=args.retry_failed)
    result = run_pipeline(cfg, console, options)
    if args.json:
        print(json.dumps(result.report, ensure_ascii=False))
    if args.dry_run:
        show_estimate(result.report, console)
        return 0
    show(result.report, console)
    console.print(f"outputs in {result.out_dir}: curated.jsonl, failed.jsonl, dataset/, report.json")
    return 0 if result.complete or (args.allow_failed and result.report.get("push", {}).get("ok", True)) else 1


def _selection(args: argparse.Namespace) -> list[str]:
    """--shard/--offset/--limit as config overrides (they win over the file and --set)."""
    pairs = (("input.shard", args.shard), ("input.offset", args.offset), ("input.limit", args.limit))
    return [f"{key}={value}" for key, value in pairs if value is not None]


def _stats(args: argparse.Namespace, console: Console) -> int:
    from data_pipeline.api import structure_stats
    from data_pipeline.config import load_config
    from data_pipeline.report import show_structure

    tokenizer = args.tokenizer or (load_config(args.config, args.overrides).tokenizer if args.config else "tiny")
    try:
        summary, problems = structure_stats(args.stats, tokenizer, args.field)
    except (OSError, ValueError) as err:  # one line on stderr, exit 2 (multiverse.cli)
        raise UsageError(f"--stats: {err}") from err
    for p in problems:
        console.print(f"[yellow]unparsable: {p}[/yellow]")
    show_structure(summary, console)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    from multiverse.cli import main

    sys.exit(main(["curate", *sys.argv[1:]]))
