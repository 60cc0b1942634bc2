"""`multiverse train`: fine-tune a Hugging Face causal LM with Multiverse Attention from a YAML config.

    multiverse train --config training/configs/tiny_cpu.yaml --set train.max_steps=20
    multiverse train --stage distill --config training/configs/distill_tiny.yaml   # self-distillation rounds
    multiverse train --stage rl --config training/configs/rl_tiny.yaml             # parallel-aware RL
    accelerate launch --config_file training/configs/accelerate/fsdp_1x8.yaml \\
        -m multiverse.cli train --config training/configs/qwen2.5-32b_1x8.yaml
"""
from __future__ import annotations

import argparse
import json

from multiverse import threads
from multiverse.config_io import dump
from multiverse.errors import check_data_file, check_model_path
from training.config import Config, load_config

# Shorthand flags -> dotted config keys.
SHORTHANDS = {
    "model": "model.name_or_path",
    "data": "data.multiverse",
    "output_dir": "train.output_dir",
    "max_steps": "train.max_steps",
    "resume": "train.resume",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=["sft", "distill", "rl"], default="sft",
                        help="sft: fine-tune on rows; distill: sample, keep the correct and valid, fine-tune, in rounds; "
                        "rl: policy gradient over the engine's rollouts (training/README.md)")
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
    stage = getattr(args, "stage", "sft")
    shorthands = SHORTHANDS if stage == "sft" else {**SHORTHANDS, "data": "data.tasks"}
    if stage == "distill":  # the output is the rounds' folder; steps and resume belong to each round's fine-tune
        shorthands = {**shorthands, "output_dir": "distill.output_dir", "max_steps": "sft.train.max_steps",
                      "resume": "sft.train.resume"}
    for name, key in shorthands.items():
        value = getattr(args, name, None)
        if value is not None:
            items.append(f"{key}={value}")
    if args.autoregressive_baseline:
        items.append("train.mode=autoregressive")
    return items


def run_stage(args: argparse.Namespace) -> int:
    """`--stage distill` and `--stage rl`: their own typed configs (training/distill/config.py, training/rl/config.py)."""
    from multiverse.errors import UsageError

    if args.autoregressive_baseline or args.dry_run:
        raise UsageError(f"--stage {args.stage}: --autoregressive-baseline and --dry-run are for --stage sft")
    if args.stage == "rl":
        from training.rl.config import load_rl_config as load_stage
    else:
        from training.distill.config import load_distill_config as load_stage
    cfg = load_stage(args.config, overrides(args))
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    check_model_path(cfg.model.name_or_path, "model.name_or_path")
    check_data_file(cfg.data.tasks, "data.tasks")
    threads.apply(args.threads, threads.count_params(cfg.model.name_or_path))
    if args.stage == "rl":
        from training.rl.run import train_rl

        result = train_rl(cfg)
        print(json.dumps({"event": "done", "output_dir": result["output_dir"], "global_step": result["global_step"],
                          "curves": result["curves"]}))
        return 0
    from training.distill.run import distill

    print(json.dumps({"event": "done", "rounds": distill(cfg)}))
    return 0


def check_args(args: argparse.Namespace) -> None:
    """--stage sft: the config's values and paths, before torch is imported (multiverse.cli calls this first)."""
    if getattr(args, "stage", "sft") == "sft":
        args.cfg = check_config(args)


def check_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, overrides(args))  # a ConfigError is a usage error: one line, exit 2
    if args.print_config:
        return cfg
    check_model_path(cfg.model.name_or_path, "model.name_or_path")
    if cfg.model.tokenizer:
        check_model_path(cfg.model.tokenizer, "model.tokenizer")
    check_data_file(cfg.data.multiverse, "data.multiverse")
    check_data_file(cfg.data.autoregressive, "data.autoregressive")
    return cfg


def run(args: argparse.Namespace) -> int:
    if getattr(args, "stage", "sft") != "sft":
        return run_stage(args)
    cfg = getattr(args, "cfg", None) or check_config(args)
    if args.print_config:
        print(dump(cfg), end="")
        return 0
    threads.apply(args.threads, threads.count_params(cfg.model.name_or_path))
    from training import run as runner

    if args.dry_run:
        from training.model_setup import load_tokenizer
        from multiverse.tokens import add_structure_tokens

        tok = load_tokenizer(cfg.model)
        add_structure_tokens(None, tok)
        from training.rows import build_rows

        rows = build_rows(cfg, tok)  # also fills the token cache, so a cluster job can start from it
        print(json.dumps({"event": "dry_run", "rows": len(rows.train), "eval_rows": len(rows.eval),
                          "token_cache": rows.cache, **rows.stats.__dict__}))
        return 0
    result = runner.train(cfg)
    print(json.dumps({"event": "done", "output_dir": result["output_dir"], "global_step": result["global_step"]}))
    return 0
