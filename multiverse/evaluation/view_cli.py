"""`multiverse view`: one self-contained HTML page of a `multiverse eval` run.

    multiverse view runs/eval                       # writes runs/eval/view.html
    multiverse view runs/eval --out /tmp/run.html

The page needs no server and no network (CSS, JS and plots are inline): open it in any browser, mail it, attach
it to an issue. It shows the summary table, the plots, and per sample the question, the grade and the branch tree
(paths side by side, the critical path highlighted), filterable by correct / wrong / forked.
"""
from __future__ import annotations

import argparse
import os

from multiverse.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a `multiverse eval` output folder (--out of the run)")
    parser.add_argument("--out", help="the HTML file to write (default: RUN_DIR/view.html)")


def check_args(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.run_dir):
        raise UsageError(f"{args.run_dir}: no such directory")
    if not os.path.isfile(os.path.join(args.run_dir, "config.json")):
        raise UsageError(f"{args.run_dir}: not a multiverse eval run (no config.json)")


def run(args: argparse.Namespace) -> int:
    from multiverse.evaluation.provenance import write_text
    from multiverse.evaluation.view.page import build, load_run

    check_args(args)
    page = build(load_run(args.run_dir))
    out = args.out or os.path.join(args.run_dir, "view.html")
    write_text(out, page)
    print(f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB)")
    return 0
