"""`multiverse generate`: decode one prompt with parallel branches, drawn live side by side, then the stats.

    multiverse generate "Let A = 83 mod 5, B = 58 mod 5, C = 50 mod 5, D = 56 mod 5. Compute A+B+C+D."  # default model
    multiverse generate --model PATH "Solve: ..."            # a local HF model with the structure tags
    multiverse generate --raw "<Parallel>..."                 # the prompt as it is, without the chat template
    multiverse generate --tiny --script trace.txt "Consider"   # offline demo: tiny random model follows a trace
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiverse.errors import UsageError, check_at_least, check_tokenizer

if TYPE_CHECKING:  # torch, transformers and rich load in run(): flag errors come back at once
    from engine.api import MultiverseLM
    from engine.params import SamplingParams


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from multiverse.demo import DEFAULT_MODEL

    parser.add_argument("prompt", help="the prompt text (a user message when the model has a chat template)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--model", default=str(DEFAULT_MODEL),
        help="local path or hub name of a Hugging Face causal LM whose tokenizer has the structure tags "
        "(default: the tiny model shipped with the package)",
    )
    src.add_argument("--tiny", action="store_true", help="a tiny random model built in-process (demo, tests)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--raw", action="store_true", help="tokenise the prompt as it is, bypassing the chat template")
    fmt.add_argument("--chat", action="store_true", help="require the chat template (the default whenever the "
                     "tokenizer has one; an error if it has none)")
    parser.add_argument("--script", type=Path, help="a Multiverse trace the decoder must follow (demo)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="budget of sampled tokens over all branches")
    parser.add_argument("--max-critical-tokens", type=int, default=None,
                        help="budget of positions along the critical path (latency); unset: none")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    parser.add_argument("--max-paths", type=int, default=None, help="most paths per block (unset: the engine's)")
    parser.add_argument("--max-depth", type=int, default=None, help="deepest block nesting (unset: the engine's)")
    parser.add_argument("--sequential", action="store_true", help="never fork (parallel=False): a diagnostic, not the "
                        "baseline; the baseline is the autoregressive twin, --model multiverse/assets/tiny-autoregressive")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the model's)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="cast the weights (unset: as stored)")
    from engine.kv_memory import add_kv_arguments

    add_kv_arguments(parser)
    parser.add_argument("--no-live", action="store_true", help="no live view; print the text at the end")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    from engine import controls
    from engine.backend import add_backend_arguments

    controls.add_arguments(parser)
    add_backend_arguments(parser)


def check_args(args: argparse.Namespace) -> None:
    """Every flag's value, before any model loads (the model path and device: multiverse.cli.check_common)."""
    for flag, value, low in [("--max-new-tokens", args.max_new_tokens, 1), ("--max-critical-tokens",
                             args.max_critical_tokens, 1), ("--temperature", args.temperature, 0),
                             ("--top-k", args.top_k, 0), ("--max-paths", args.max_paths, 1),
                             ("--max-depth", args.max_depth, 1)]:
        check_at_least(flag, value, low)
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p {args.top_p}: must lie in (0, 1]")
    if any(not s for s in args.stop):
        raise UsageError("--stop: a stop string must not be empty")
    if args.script is not None and not args.script.is_file():
        raise UsageError(f"--script {args.script}: no such file")
    if not args.prompt.strip():
        raise UsageError("the prompt is empty: give the question as the argument, e.g. multiverse generate \"Let A = ...\"")
    from engine import controls

    try:
        controls.from_arguments(args)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err).replace("SamplingParams.", "--").replace("_", "-")) from err
    from engine.backend import client_options

    client_options(args)
    from engine.kv_memory import kv_options

    kv_options(args)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from engine.events import Finished
    from engine.view import BranchView, stats_table

    console = Console(stderr=args.json)
    lm = _build(args)
    if lm.kv is not None:  # the start-up line: KV pages, tokens, GiB, largest request, how it was sized
        console.print(lm.kv.describe(), style="dim", markup=False, highlight=False, soft_wrap=True)
    prompt = _prompt(args, lm.tokenizer)
    params = _params(args, lm, prompt)
    view, output = BranchView(), None
    with Live(view.render(), console=console, refresh_per_second=12, transient=False, auto_refresh=False) if not args.no_live else _Null() as live:
        for event in lm.stream([prompt], params, raw=True):  # _prompt applied the chat template (or --raw)
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
        print(json.dumps({**{k: v for k, v in asdict(output).items() if k != "prompt_token_ids"}, "stats": output.stats.as_dict()}))
    return 0


def _prompt(args: argparse.Namespace, tokenizer: Any) -> str | list[dict[str, str]]:
    """A user turn through the chat template whenever the tokenizer has one (as vLLM's chat does), unless --raw."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if args.chat and not has_template:
        raise UsageError(f"--chat: the tokenizer of {args.model} has no chat template (drop --chat, or use --raw)")
    if args.raw or not has_template:
        return args.prompt
    return [{"role": "user", "content": args.prompt}]


def _build(args: argparse.Namespace) -> MultiverseLM:
    import torch

    from engine.api import MultiverseLM
    from engine.kv_memory import kv_options

    options = dict(parallel=not args.sequential, max_paths=args.max_paths, max_depth=args.max_depth)
    if args.dtype:
        options["dtype"] = getattr(torch, args.dtype)
    if args.tiny:
        if args.backend != "native":
            raise UsageError("--tiny builds a model in this process: use it with --backend native")
        from multiverse.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        return MultiverseLM(build_model(tok), tok, device=args.device, threads=getattr(args, "threads", None), **options,
                            **kv_options(args))
    tok = check_tokenizer(args.model)  # before the weights: a tokenizer without the tags is a usage error
    from engine.backend import remote_from_args

    structure = {k: v for k, v in options.items() if k != "dtype"}
    if (remote := remote_from_args(args, args.model, tokenizer=tok, **structure)) is not None:
        return remote  # a MultiverseLM on the SGLang client
    return MultiverseLM(args.model, tok, device=args.device, threads=getattr(args, "threads", None), **options,
                        **kv_options(args))


def _params(args: argparse.Namespace, lm: MultiverseLM, prompt) -> SamplingParams:  # noqa: ANN001
    from engine import controls
    from engine.params import SamplingParams

    processors = []
    if args.script is not None:
        from engine.script import ScriptedProcessor
        from multiverse.attention import StructureRules
        from multiverse.encode import encode_trace

        p_ids = lm.encode_prompt(prompt, raw=True)
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
        **controls.from_arguments(args),
    )


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
