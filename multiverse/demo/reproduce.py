"""Reproduce the paper's claim on CPU: a Multiverse model and its autoregressive twin trained on the sums task.

    python -m multiverse.demo.reproduce [--out runs/repro] [--steps N]   # data -> tokenizer -> init -> 2 x train
    python -m multiverse.demo.reproduce --prepare-only                  # data, tokenizer and initial model only

Writes under --out (never into multiverse/assets; the shipped default model is not touched):
train.jsonl (seed 0) and heldout.jsonl (seed 1, disjoint questions, larger sizes too) from `multiverse.demo.sums`,
init/ (a BPE tokenizer trained on the training rows + one random Qwen2, seed 0, that both runs start from), then
multiverse/ and autoregressive/ from `multiverse train --config training/configs/repro_cpu.yaml`, once as is
(Multiverse Attention) and once with `--autoregressive-baseline`. Prints the `multiverse eval` commands that compare
the two. Seeds are fixed: the same command gives the same rows and the same initial model.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs", "repro_cpu.yaml")
RUNS = {"multiverse": [], "autoregressive": ["--autoregressive-baseline"]}  # run name -> extra `train` flags
HELD_OUT_FIELDS = "question=question,answer=deepseek_attempt"  # `multiverse eval --field` for heldout.jsonl


def write_rows(out: str, rows: int, held_out: int) -> list[dict]:
    """train.jsonl and heldout.jsonl under `out`; returns the training rows."""
    from multiverse.demo.sums import HELD_OUT, TRAIN, make_rows, write_jsonl

    os.makedirs(out, exist_ok=True)
    train = make_rows(rows, seed=0, shape=TRAIN)
    write_jsonl(os.path.join(out, "train.jsonl"), train)
    held = make_rows(held_out, seed=1, shape=HELD_OUT, exclude={r["question"] for r in train})
    write_jsonl(os.path.join(out, "heldout.jsonl"), held)
    return train


def write_init(out: str, train: list[dict], hidden: int, layers: int) -> str:
    """out/init: the task tokenizer (trained on up to 2,000 training rows) and the random model both runs start from."""
    from multiverse.demo.tokenizer import task_tokenizer
    from multiverse.tiny import build_model

    corpus = [t for r in train[:2000] for t in (r["question"], r["deepseek_thinking_trajectory"], "Answer: 1")]
    tok = task_tokenizer(corpus)
    init = os.path.join(out, "init")
    build_model(tok, hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2, seed=0).save_pretrained(init)
    tok.save_pretrained(init)
    return init


def train_run(name: str, out: str, steps: int | None, threads: int) -> dict:
    """One `multiverse train` child process into out/<name>; returns its wall time."""
    run_dir = os.path.join(out, name)
    cmd = [sys.executable, "-m", "multiverse.cli", "train", "--config", CONFIG, *RUNS[name], "--threads", str(threads),
           "--set", f"model.name_or_path={os.path.join(out, 'init')}",
           "--set", f"data.multiverse={os.path.join(out, 'train.jsonl')}", "--set", f"train.output_dir={run_dir}"]
    if steps is not None:
        cmd += ["--max-steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    stop_at_end_of_turn(run_dir)
    return {"run": name, "output_dir": run_dir, "seconds": round(time.perf_counter() - start, 1)}


def stop_at_end_of_turn(run_dir: str) -> None:
    """Generation in run_dir ends at the end-of-turn token as well as at end of text."""
    from transformers import AutoTokenizer, GenerationConfig

    from multiverse.tiny import IM_END

    tok = AutoTokenizer.from_pretrained(run_dir)
    ids = [tok.convert_tokens_to_ids(IM_END), tok.eos_token_id]
    GenerationConfig(eos_token_id=ids, pad_token_id=tok.pad_token_id).save_pretrained(run_dir)


def eval_commands(out: str) -> list[str]:
    """The `multiverse eval` commands (main's flags only) that compare the two models on the held-out rows."""
    mv, ar = (shlex.quote(os.path.join(out, name)) for name in RUNS)
    held = shlex.quote(os.path.join(out, "heldout.jsonl"))
    common = f"--tasks {held} --field {HELD_OUT_FIELDS} --suffix '' --temperature 0 --max-new-tokens 640"
    return [
        f"multiverse eval --model {mv} {common} --limit 500 --batch-size 16 --out {out}/eval/multiverse",
        f"multiverse eval --model {ar} {common} --limit 500 --batch-size 16 --out {out}/eval/autoregressive",
        # budget sweep against the twin + ABBA-paired wall clock of the Multiverse model with and without forks
        f"multiverse eval --model {mv} --baseline-model {ar} --baseline-suffix '' {common} --limit 100 --batch-size 16 "
        f"--budgets 64,128,192,256,384 --budget-kind critical --compare-sequential --speed-questions 10 "
        f"--speed-rounds 2 --out {out}/eval/sweep",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/repro", help="data, initial model and the two trained models")
    parser.add_argument("--rows", type=int, default=6000, help="training rows")
    parser.add_argument("--held-out", type=int, default=600, help="held-out rows")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, help="train.max_steps (default: the config's, 700)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    parser.add_argument("--only", choices=sorted(RUNS), help="train one of the two models")
    parser.add_argument("--prepare-only", action="store_true", help="rows, tokenizer and initial model; no training")
    args = parser.parse_args(argv)
    for flag, value in (("--rows", args.rows), ("--held-out", args.held_out)):
        if value < 1:
            parser.error(f"{flag} {value}: must be >= 1")
    init = write_init(args.out, write_rows(args.out, args.rows, args.held_out), args.hidden, args.layers)
    print(json.dumps({"out": args.out, "init": init, "rows": args.rows, "held_out": args.held_out}))
    if not args.prepare_only:
        for name in [args.only] if args.only else list(RUNS):
            print(json.dumps(train_run(name, args.out, args.steps, args.threads)))
    print("# compare the two models (after training):")
    print("\n".join(eval_commands(args.out)))


if __name__ == "__main__":
    main()
