"""The `multiverse` command line. Each subcommand lives in its own module and is imported lazily.

A subcommand module provides `add_arguments(parser: argparse.ArgumentParser) -> None` and
`run(args: argparse.Namespace) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("multiverse.check", "check the structure of a trace file and print its tree"),
    "generate": ("engine.cli", "generate with parallel branches, shown live"),
    "serve": ("engine.server", "serve the engine over an OpenAI-compatible HTTP API"),
    "train": ("training.cli", "fine-tune a Hugging Face causal LM with Multiverse Attention"),
    "curate": ("data_pipeline.cli", "turn sequential reasoning traces into Multiverse data"),
    "eval": ("multiverse.evaluation.cli", "evaluate on AIME24/25, MATH500, GPQA-Diamond"),
}


def _load(name: str):  # noqa: ANN202 - a module
    return importlib.import_module(SUBCOMMANDS[name][0])


def _available(name: str) -> bool:
    """A subcommand whose module is not part of this installation is not offered. Only the module's package is
    looked up (finding the module itself would import that package, e.g. the evaluation's sympy: seconds)."""
    try:
        return importlib.util.find_spec(SUBCOMMANDS[name][0].rsplit(".", 1)[0]) is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="multiverse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, (_, help_text) in SUBCOMMANDS.items():
        if not _available(name):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            _load(name).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(_load(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
