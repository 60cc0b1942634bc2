"""`multiverse serve`: flags, the checks that run before the model loads, then the server in the foreground."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from engine.server.config import ServerConfig
from multiverse.errors import UsageError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.backend import add_backend_arguments

    from multiverse.demo import DEFAULT_MODEL

    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", default=str(DEFAULT_MODEL),
                     help="local path or hub id of a Hugging Face causal LM whose tokenizer has the structure tags "
                     "(default: the tiny model shipped with the package)")
    src.add_argument("--tiny", action="store_true", help="a tiny random model built in-process (demo, tests)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--served-model-name", default="multiverse", help="the model name clients must use (or omit)")
    parser.add_argument("--api-key", default=os.environ.get("MULTIVERSE_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on /v1/* and /generate (default: $MULTIVERSE_API_KEY, "
                        "else no key)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weights and KV dtype (auto: the model's)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length: prompt plus generated positions (default: the model's max_position_embeddings)")
    parser.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the model's)")
    parser.add_argument("--sequential", action="store_true", help="parallel=False for every request: never fork")
    parser.add_argument("--max-paths", type=int, default=None, help="SPEC §6 limit: a block with more paths runs sequentially")
    parser.add_argument("--max-depth", type=int, default=None, help="SPEC §6 limit: deeper blocks run sequentially")
    from engine.kv_memory import add_kv_arguments

    add_kv_arguments(parser)
    parser.add_argument("--page-size", type=int, default=16, help="token slots per KV page")
    parser.add_argument("--max-running", type=int, default=64, help="requests decoding at once (others wait)")
    parser.add_argument("--max-waiting", type=int, default=256,
                        help="requests held beyond --max-running (being tokenized or queued); past it, 503 + Retry-After")
    parser.add_argument("--max-body-bytes", type=int, default=None,
                        help="request body cap, answered 413 before the body is read (default: 64 bytes per context "
                        "position, at least 1 MiB)")
    parser.add_argument("--max-batch-tokens", type=int, default=None,
                        help="tokens one engine step computes: decodes first, then chunks of prompts "
                             "(default: 2048 on CUDA, 96 on CPU)")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0,
                        help="seconds running requests may finish after SIGINT/SIGTERM before they are aborted")
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from engine.server.launch import Server, bind

    check_args(args)
    sock = bind(args.host, args.port)  # before the model loads: a taken port fails in a second, not a minute
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # the KV line
    try:
        lm = _build(args)
        config = ServerConfig(
            model_name=args.served_model_name, model_path=None if args.tiny else args.model,
            max_model_len=_context(args, lm), default_max_tokens=args.default_max_tokens,
            api_key=args.api_key or None, shutdown_timeout_s=args.shutdown_timeout, max_waiting=args.max_waiting,
            max_body_bytes=args.max_body_bytes,
        )
    except BaseException:
        sock.close()
        raise
    server = Server(lm, config, sock)
    logging.getLogger("multiverse.serve").info(
        "multiverse serve: %s/v1 (model %r, context %d)%s", server.url, config.model_name,
        config.max_model_len, " with an API key" if config.api_key else "",
    )
    server.run()
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Flag checks that need no model (multiverse.cli runs them before torch is imported)."""
    for flag, value, low in [("--max-model-len", args.max_model_len, 2), ("--default-max-tokens", args.default_max_tokens, 1),
                             ("--page-size", args.page_size, 1),
                             ("--max-running", args.max_running, 1), ("--max-paths", args.max_paths, 1),
                             ("--max-depth", args.max_depth, 1), ("--shutdown-timeout", args.shutdown_timeout, 0),
                             ("--max-waiting", args.max_waiting, 0), ("--max-body-bytes", args.max_body_bytes, 1),
                             ("--max-batch-tokens", args.max_batch_tokens, 1)]:
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be >= {low}")
    from engine.backend import client_options

    client_options(args)
    from engine.kv_memory import kv_options

    kv_options(args)


def _build(args: argparse.Namespace) -> Any:
    import torch

    from engine.api import MultiverseLM
    from engine.backend import remote_from_args
    from engine.kv_memory import kv_options

    options: dict[str, Any] = dict(
        parallel=not args.sequential, max_paths=args.max_paths, max_depth=args.max_depth,
        page_size=args.page_size, max_running=args.max_running, max_batch_tokens=args.max_batch_tokens, **kv_options(args),
        dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
        step_delay_s=_step_delay(),
    )
    remote = remote_from_args(args, args.model, parallel=options["parallel"], max_paths=args.max_paths,
                              max_depth=args.max_depth, max_running=args.max_running)
    if remote is not None:  # our OpenAI API in front of a SGLang server (exact merges with its plugin)
        return remote
    if args.tiny:
        from multiverse.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        return MultiverseLM(build_model(tok), tok, device=args.device, threads=getattr(args, "threads", None), **options)
    return MultiverseLM(args.model, device=args.device, threads=getattr(args, "threads", None), **options)


def _step_delay() -> float:
    """Test-only: $MULTIVERSE_STEP_DELAY_S seconds of sleep before each engine forward (a slow model)."""
    raw = os.environ.get("MULTIVERSE_STEP_DELAY_S", "0")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 60:
        raise UsageError(f"MULTIVERSE_STEP_DELAY_S={raw!r}: must be a number of seconds in [0, 60)")
    return value


def _context(args: argparse.Namespace, lm: Any) -> int:
    if getattr(lm, "model", None) is None:  # --backend sglang: the SGLang server knows its context length
        limit = getattr(lm, "server", None) and lm.server.info.get("context_length")
    else:
        limit = getattr(lm.model.config.get_text_config(), "max_position_embeddings", None)
    if args.max_model_len is None:
        if limit is None:
            raise UsageError("the model's config has no max_position_embeddings: give --max-model-len")
        return int(limit)
    if limit is not None and args.max_model_len > limit:
        raise UsageError(f"--max-model-len {args.max_model_len}: the model's position range is {limit}")
    return args.max_model_len


__all__ = ["ServerConfig", "add_arguments", "check_args", "run"]
