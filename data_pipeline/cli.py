"""`multiverse curate`: run (or resume) a curation from a YAML config, or print --stats of trace files."""
from __future__ import annotations

import argparse
import json
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


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if args.stats:
        return _stats(args, console)
    if not args.config and not args.print_config:
        raise UsageError("give --config FILE.yaml (or --stats FILE ...)")
    from data_pipeline.config import load_config
    from multiverse.config_io import dump

    cfg = load_config(args.config, args.overrides)  # a ConfigError is a usage error: one line, exit 2
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    from data_pipeline.pipeline import run as run_pipeline
    from data_pipeline.report import show

    result = run_pipeline(cfg, console)
    show(result.report, console)
    console.print(f"outputs in {result.out_dir}: curated.jsonl, failed.jsonl, dataset/, report.json")
    if args.json:
        print(json.dumps(result.report, ensure_ascii=False))
    return 0


def _stats(args: argparse.Namespace, console: Console) -> int:
    from data_pipeline.api import structure_stats
    from data_pipeline.config import load_config
    from data_pipeline.report import show_structure

    tokenizer = args.tokenizer or (load_config(args.config, args.overrides).tokenizer if args.config else "tiny")
    try:
        summary, problems = structure_stats(args.stats, tokenizer, args.field)
    except (OSError, ValueError) as err:
        console.print(f"[red]multiverse curate --stats: {err}[/red]")
        return 2
    for p in problems:
        console.print(f"[yellow]unparsable: {p}[/yellow]")
    show_structure(summary, console)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    from multiverse.cli import main

    sys.exit(main(["curate", *sys.argv[1:]]))
