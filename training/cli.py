"""`multiverse train`: fine-tune a Hugging Face causal LM with Multiverse Attention from a YAML config.

    multiverse train --config training/configs/tiny_cpu.yaml --set train.max_steps=20
    accelerate launch --config_file training/configs/accelerate/fsdp_1x8.yaml \\
        -m multiverse.cli train --config training/configs/qwen2.5-32b_1x8.yaml
"""
from __future__ import annotations

import argparse
import json

from multiverse import threads
from multiverse.config_io import dump
from multiverse.errors import check_data_file, check_model_path
from training.config import load_config

# Shorthand flags -> dotted config keys.
SHORTHANDS = {
    "model": "model.name_or_path",
    "data": "data.multiverse",
    "output_dir": "train.output_dir",
    "max_steps": "train.max_steps",
    "resume": "train.resume",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with model/data/train sections (see training/README.md)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, e.g. train.max_steps=50"
    )
    parser.add_argument("--model", help="model directory or hub name (model.name_or_path)")
    parser.add_argument("--data", help="Multiverse rows: hub dataset or local jsonl/parquet (data.multiverse)")
    parser.add_argument("--output-dir", dest="output_dir", help="train.output_dir")
    parser.add_argument("--max-steps", dest="max_steps", type=int, help="train.max_steps")
    parser.add_argument("--resume", help="checkpoint directory, or 'auto' for the newest in output_dir")
    parser.add_argument(
        "--autoregressive-baseline",
        action="store_true",
        help="train the baseline: sequential twins of the Multiverse rows, plain causal attention",
    )
    parser.add_argument("--dry-run", action="store_true", help="load and tokenise the data, print statistics, stop")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration (YAML), stop")


def overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.set)
    for name, key in SHORTHANDS.items():
        value = getattr(args, name, None)
        if value is not None:
            items.append(f"{key}={value}")
    if args.autoregressive_baseline:
        items.append("train.mode=autoregressive")
    return items


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides(args))  # a ConfigError is a usage error: one line, exit 2
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    check_model_path(cfg.model.name_or_path, "model.name_or_path")
    if cfg.model.tokenizer:
        check_model_path(cfg.model.tokenizer, "model.tokenizer")
    check_data_file(cfg.data.multiverse, "data.multiverse")
    check_data_file(cfg.data.autoregressive, "data.autoregressive")
    threads.apply(args.threads, threads.count_params(cfg.model.name_or_path))
    from training import run as runner

    if args.dry_run:
        from training.model_setup import load_tokenizer
        from multiverse.tokens import add_structure_tokens

        tok = load_tokenizer(cfg.model)
        add_structure_tokens(None, tok)
        rows, stats = runner.build_rows(cfg, tok)
        print(json.dumps({"event": "dry_run", "rows": len(rows), **stats.__dict__}))
        return 0
    result = runner.train(cfg)
    print(json.dumps({"event": "done", "output_dir": result["output_dir"], "global_step": result["global_step"]}))
    return 0
