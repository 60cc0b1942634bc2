"""`multiverse check FILE`: validate a trace's structure and print its tree.

The tree and the counts go to stdout; a file that breaks a rule (or cannot be read) gives one line on stderr,
`multiverse check: error: FILE: <rule and place>`, and exit status 1; a missing file is a usage error (exit 2),
reported before anything heavy is imported.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.tree import Tree

from multiverse.errors import UsageError
from multiverse.structure import Document, StructureError, Think, parse
from multiverse.structure.tree import Text

if TYPE_CHECKING:
    from multiverse.attention.counts import TokenCounts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="trace files (reference XML-like or canonical text)")
    parser.add_argument("--width", type=int, default=60, help="characters of text shown per node")
    parser.add_argument(
        "--tokenizer",
        help="also count tokens, critical path and degree of parallelism with this tokenizer "
        "(a local path or hub name; 'tiny' = the built-in test tokenizer)",
    )


def check_args(args: argparse.Namespace) -> None:
    """Every file exists and is a file (a usage error otherwise), before the tokenizer or torch load."""
    if args.width < 8:
        raise UsageError(f"--width {args.width}: must be >= 8")
    for name in args.files:
        if not os.path.exists(name):
            raise UsageError(f"{name}: no such file")
        if os.path.isdir(name):
            raise UsageError(f"{name}: is a directory, not a trace file")


def run(args: argparse.Namespace) -> int:
    console = Console()
    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None  # once, before any file
    bad = 0
    for name in args.files:
        try:
            with open(name, encoding="utf-8") as f:
                doc = parse(f.read())
        except StructureError as err:
            bad += _error(name, str(err))
            continue
        except OSError as err:
            bad += _error(name, err.strerror or str(err))
            continue
        except UnicodeDecodeError as err:
            bad += _error(name, f"not UTF-8 text (byte {err.start}: {err.object[err.start : err.start + 1]!r})")
            continue
        console.print(render(doc, name, args.width))
        blocks = list(doc.blocks())
        depth = max((b.depth() for b in blocks), default=0)  # an enclosing block is deeper than any inside it
        line = f"{name}: ok, {len(blocks)} blocks, nesting depth {depth}"
        if tokenizer is not None:
            c = token_counts(doc, tokenizer)
            line += (
                f", {c.generated} generated + {c.forced} forced tokens, critical path {c.critical_path}, "
                f"degree of parallelism {c.degree_of_parallelism:.3f}"
            )
        console.print(line, soft_wrap=True)
    return 1 if bad else 0


def _error(name: str, message: str) -> int:
    """One line on stderr for a bad file (the CLI's error format); returns 1 (one more bad file)."""
    print(f"multiverse check: error: {name}: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _tokenizer(name: str) -> object:
    from multiverse.tokens import load_tagged_tokenizer

    try:
        return load_tagged_tokenizer(name)
    except (OSError, ValueError) as err:
        raise UsageError(f"--tokenizer {name}: {' '.join(str(err).split())[:300]}") from err


def token_counts(doc: Document, tokenizer: object) -> "TokenCounts":
    """SPEC §7 counts of a parsed trace in canonical form, as if the engine had generated it from no prompt:
    forced tokens are not generated tokens (the core's one definition, shared with the engine)."""
    from multiverse.attention.counts import count_tokens
    from multiverse.encode import encode_trace
    from multiverse.structure import serialise

    return count_tokens(encode_trace(serialise(doc), tokenizer, canonical=False), tokenizer)


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render(doc: Document, title: str, width: int = 60) -> Tree:
    tree = Tree(f"[bold]{title}[/bold]")
    _add(tree, doc.children, width)
    return tree


def _add(tree: Tree, nodes: list, width: int) -> None:
    for node in nodes:
        if isinstance(node, Text):
            if node.text.strip():
                tree.add(f"[dim]{_short(node.text, width)}[/dim]")
        elif isinstance(node, Think):
            _add(tree.add("[cyan]<Think>[/cyan]"), node.children, width)
        else:
            blk = tree.add(f"[magenta]<Parallel>[/magenta] {len(node.paths)} paths")
            goal = blk.add(f"[yellow]Goal[/yellow] {_short(node.goal.text, width)}")
            for o in node.goal.outlines:
                goal.add(f"[yellow]{o.label}[/yellow]: {_short(o.text, width)}")
            for p in node.paths:
                _add(blk.add(f"[green]Path {p.label}[/green]"), p.children, width)
            blk.add(f"[blue]Conclusion[/blue] {_short(node.conclusion.text, width)}")


if __name__ == "__main__":
    from multiverse.cli import main

    sys.exit(main(["check", *sys.argv[1:]]))
