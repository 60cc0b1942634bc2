"""`multiverse generate`: decode one prompt with parallel branches, drawn live side by side, then the stats.

    multiverse generate "Add each pair: 17+5, 49+26."        # the tiny default model shipped with the package
    multiverse generate --model PATH "Solve: ..."            # a local HF model with the structure tags
    multiverse generate --tiny --script trace.txt "Consider"   # offline demo: tiny random model follows a trace
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.live import Live

from engine.api import MultiverseLM
from engine.backend import add_backend_arguments, remote_from_args
from engine.events import Finished
from engine.params import SamplingParams
from engine.view import BranchView, stats_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt text")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--model",
        help="local path or hub name of a Hugging Face causal LM whose tokenizer has the structure tags "
        "(default: the tiny model shipped with the package; chat-formatted)",
    )
    src.add_argument("--tiny", action="store_true", help="a tiny random model built in-process (demo, tests)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt as a user message (chat template)")
    parser.add_argument("--script", type=Path, help="a Multiverse trace the decoder must follow (demo)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--max-critical-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    parser.add_argument("--max-paths", type=int, default=None)
    parser.add_argument("--max-depth", type=int, default=None)
    parser.add_argument("--sequential", action="store_true", help="parallel=False: the sequential baseline")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the model's)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    parser.add_argument("--no-live", action="store_true", help="no live view; print the text at the end")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    if args.model is None and not args.tiny:
        from multiverse.demo import DEFAULT_MODEL

        args.model, args.chat = str(DEFAULT_MODEL), True  # the default model was trained on chat turns
    lm = _build(args)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    params = _params(args, lm, prompt)
    view, output = BranchView(), None
    with Live(view.render(), console=console, refresh_per_second=12, transient=False, auto_refresh=False) if not args.no_live else _Null() as live:
        for event in lm.stream([prompt], params):
            view.apply(event)
            if isinstance(event, Finished):
                output = event.output
            if live is not None:
                live.update(view.render(), refresh=True)
    assert output is not None
    console.print()
    if args.no_live and not args.json:
        console.print(output.text, markup=False, highlight=False)
    console.print(stats_table(output))
    if args.json:
        print(json.dumps({k: v for k, v in asdict(output).items() if k != "prompt_token_ids"}))
    return 0


def _build(args: argparse.Namespace) -> MultiverseLM:
    options = dict(parallel=not args.sequential, max_paths=args.max_paths, max_depth=args.max_depth)
    if (remote := remote_from_args(args, args.model, **options)) is not None:
        return remote
    if args.dtype:
        options["dtype"] = getattr(torch, args.dtype)
    if args.tiny:
        from multiverse.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        return MultiverseLM(build_model(tok), tok, device=args.device, **options)
    if not Path(args.model).exists() and (args.model.startswith((".", "/", "~")) or args.model.count("/") != 1):
        print(f"multiverse generate: --model {args.model}: no such path (nor a hub name org/model)", file=sys.stderr)
        raise SystemExit(2)
    return MultiverseLM(args.model, device=args.device, **options)


def _params(args: argparse.Namespace, lm: MultiverseLM, prompt) -> SamplingParams:  # noqa: ANN001
    processors = []
    if args.script is not None:
        from engine.script import ScriptedProcessor
        from multiverse.attention import StructureRules
        from multiverse.encode import encode_trace

        p_ids = lm.encode_prompt(prompt)
        target = p_ids + encode_trace(args.script.read_text(), lm.tokenizer) + [lm.tokenizer.eos_token_id]
        rules = StructureRules(not args.sequential, args.max_paths, args.max_depth)
        processors.append(ScriptedProcessor(target, len(p_ids), lm.tokenizer, rules))
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        max_critical_tokens=args.max_critical_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=tuple(args.stop),
        logits_processors=processors,
    )


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
