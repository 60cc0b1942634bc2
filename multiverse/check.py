"""`multiverse check FILE`: validate a trace's structure and print its tree."""
from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.tree import Tree

from multiverse.errors import UsageError
from multiverse.structure import Document, StructureError, Think, parse
from multiverse.structure.tree import Text
from multiverse.tokens import load_tagged_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="trace files (reference XML-like or canonical text)")
    parser.add_argument("--width", type=int, default=60, help="characters of text shown per node")
    parser.add_argument(
        "--tokenizer",
        help="also count tokens, critical path and degree of parallelism with this tokenizer "
        "(a local path or hub name; 'tiny' = the built-in test tokenizer)",
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None  # once, before any file
    bad = 0
    for name in args.files:
        try:
            with open(name, encoding="utf-8") as f:
                doc = parse(f.read())
        except StructureError as err:
            console.print(f"[red]{name}: {err}[/red]", soft_wrap=True)
            bad += 1
            continue
        except OSError as err:
            console.print(f"[red]{name}: {err.strerror}[/red]")
            bad += 1
            continue
        except UnicodeDecodeError as err:
            byte = err.object[err.start : err.start + 1]
            console.print(f"[red]{name}: not UTF-8 text (byte {err.start}: {byte!r})[/red]")
            bad += 1
            continue
        console.print(render(doc, name, args.width))
        blocks = list(doc.blocks())
        depth = max((b.depth() for b in blocks), default=0)  # an enclosing block is deeper than any inside it
        line = f"{name}: ok, {len(blocks)} blocks, nesting depth {depth}"
        if tokenizer is not None:
            tokens, critical = token_counts(doc, tokenizer)
            line += f", {tokens} tokens, critical path {critical}, degree of parallelism {tokens / critical:.3f}"
        console.print(line, soft_wrap=True)
    return 1 if bad else 0


def _tokenizer(name: str) -> object:
    try:
        return load_tagged_tokenizer(name)
    except (OSError, ValueError) as err:
        raise UsageError(f"--tokenizer {name}: {' '.join(str(err).split())[:300]}") from err


def token_counts(doc: Document, tokenizer: object) -> tuple[int, int]:
    """(tokens, critical path = largest position + 1) of a parsed trace in canonical form."""
    from multiverse.attention import position_ids
    from multiverse.encode import encode_trace
    from multiverse.structure import serialise

    ids = encode_trace(serialise(doc), tokenizer, canonical=False)
    return len(ids), int(position_ids(ids, tokenizer).max()) + 1 if ids else 0


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
