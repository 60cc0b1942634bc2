"""The `multiverse` command line. Each subcommand lives in its own module and is imported lazily.

A subcommand module provides `add_arguments(parser: argparse.ArgumentParser) -> None` and
`run(args: argparse.Namespace) -> int`, and optionally `check_args(args)` (flag checks that need no model, run
before any heavy import). This module adds `--threads` and `--debug` to every subcommand, checks the
common inputs a subcommand declares (`--model`, `--device`, `--host`/`--port`) before `run` starts any slow work,
and turns errors into one line on stderr: `multiverse <command>: error: <message>`, exit 2 for usage errors
(argparse's, `UsageError`, config errors) and 1 for failures; the traceback only with `--debug`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable

from multiverse import __version__
from multiverse.errors import CommandError, UsageError, check_device, check_model_path, check_port_free

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("multiverse.check", "check the structure of a trace file and print its tree"),
    "generate": ("engine.cli", "generate with parallel branches, shown live"),
    "serve": ("engine.server", "serve the engine over an OpenAI-compatible HTTP API"),
    "train": ("training.cli", "fine-tune a Hugging Face causal LM with Multiverse Attention"),
    "curate": ("data_pipeline.cli", "turn sequential reasoning traces into Multiverse data"),
    "eval": ("multiverse.evaluation.cli", "evaluate on AIME24/25, MATH500, GPQA-Diamond"),
    "view": ("multiverse.evaluation.view_cli", "write one self-contained HTML page of an eval run"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is empty (None, False, []) or the help text already states it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        empty = action.default is None or isinstance(action.default, bool) or action.default == []  # 0 and 0.0 are shown
        if empty or action.default == argparse.SUPPRESS or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def _load(name: str):  # noqa: ANN202 - a module
    return importlib.import_module(SUBCOMMANDS[name][0])


def _available(name: str) -> bool:
    """A subcommand whose module is not part of this installation is not offered. Only the module's package is
    looked up (finding the module itself would import that package, e.g. the evaluation's sympy: seconds)."""
    try:
        return importlib.util.find_spec(SUBCOMMANDS[name][0].rsplit(".", 1)[0]) is not None
    except ModuleNotFoundError:
        return False


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every subcommand has (skipped where the subcommand defines its own)."""
    if "--threads" not in parser._option_string_actions:
        parser.add_argument(
            "--threads", type=int, default=None,
            help="torch intra-op threads (default: 1 for models under 50M parameters, else torch's default)",
        )
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")


def build_parser(wanted: str | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser; only the `wanted` subcommand's module is imported and given its arguments."""
    parser = argparse.ArgumentParser(prog="multiverse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"multiverse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name, (_, help_text) in SUBCOMMANDS.items():
        if not _available(name):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if name == wanted:
            _load(name).add_arguments(p)
            add_common_arguments(p)
        subparsers[name] = p
    return parser, subparsers


def check_common(args: argparse.Namespace) -> None:
    """Inputs several subcommands share, checked before any model loads."""
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be >= 1")
    in_process = getattr(args, "tiny", False)  # --tiny: a tiny model built in-process, no path to check
    if getattr(args, "model", None) and not in_process:
        args.model = check_model_path(args.model)
    check_device(getattr(args, "device", None))
    if getattr(args, "port", None) is not None and getattr(args, "host", None) is not None:
        check_port_free(args.host, args.port)


def apply_threads(args: argparse.Namespace) -> None:
    """--threads, else one thread for a tiny model (--tiny, or a model directory under 50M parameters)."""
    from multiverse import threads

    num_params = 0 if getattr(args, "tiny", False) else _params_of(getattr(args, "model", None))
    threads.apply(args.threads, num_params)


def _params_of(model: str | None) -> int | None:
    """Parameter count of a local (or locally cached hub) model from its safetensors headers; None if unknown."""
    from pathlib import Path

    from multiverse.threads import count_params

    if not model:
        return None
    if not Path(model).is_dir():
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
        if not isinstance(found, str):
            return None
        model = str(Path(found).parent)
    return count_params(model)


def report(command: str, err: BaseException, debug: bool) -> int:
    """Print one line for `err` (and the traceback with --debug); return the exit status."""
    if debug:
        traceback.print_exception(err)
    code = err.exit_code if isinstance(err, (UsageError, CommandError)) else 1
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # one line, nothing lost
    if not isinstance(err, (UsageError, CommandError)):
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    hint = "" if debug else " (--debug shows the traceback)" if code == 1 else ""
    print(f"multiverse {command}: error: {message}{hint}", file=sys.stderr)
    return code


def run_module(command: str, body: Callable[[], int | None], debug: bool) -> int:
    """A `python -m multiverse...` entry point with the commands' error handling: `body()`'s exit status, or one
    line on stderr (`multiverse <command>: error: ...`, exit 2 or 1; the traceback only with --debug)."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print(f"multiverse {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (the traceback with --debug)
        return report(command, err, debug)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser, subparsers = build_parser(wanted)
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help()
        return 2
    if unknown:  # reported under the subcommand's usage line, not the top-level one
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        check_common(args)
        module = _load(args.command)
        if hasattr(module, "check_args"):  # the subcommand's own flag checks, before torch is even imported
            module.check_args(args)
        apply_threads(args)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"multiverse {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (the traceback with --debug)
        return report(args.command, err, args.debug)


if __name__ == "__main__":
    sys.exit(main())
