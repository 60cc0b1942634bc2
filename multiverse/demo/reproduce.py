"""Reproduce the paper's claim on CPU: a Multiverse model and its autoregressive twin trained on the remainders task.

    python -m multiverse.demo.reproduce --evaluate               # data -> tokenizer -> init -> base -> 2 x fine-tune -> eval
    python -m multiverse.demo.reproduce --prepare-only           # data, tokenizer and initial model only
    python -m multiverse.demo.reproduce --install-only           # copy the trained pair into multiverse/assets
    python -m multiverse.demo.reproduce --shape wide --parallel-share 0.25 --out runs/wide   # the widened task's
                                                    # under-parallel start (issue 23's chain; then distill and RL)

Writes under --out (default runs/repro): train.jsonl (seed 0), heldout.jsonl (seed 1, disjoint questions, larger
sizes too) and finetune.jsonl (seed 2, half the independent problems nested, no held-out question) from
`multiverse.demo.remainders`, init/ (a BPE tokenizer trained on the training rows + one random Qwen2, seed 0), then
three `multiverse train --config training/configs/repro_cpu.yaml` runs: base/ (3,600 steps, 7,200 for --shape wide,
on the sequential twins of train.jsonl, `--autoregressive-baseline`, on all cores: the language model both start from, as the paper's
models start from one pretrained model), then, both at once (one core each), multiverse/ (Multiverse Attention)
and autoregressive/ (the twins), each fine-tuned from base/ on finetune.jsonl for the config's max_steps.
--evaluate then runs the `multiverse eval` commands that compare the two (without it they are printed). --install
copies the two trained models (their final weights, tokenizer and configs, no checkpoints) over the shipped default
model and its twin (multiverse/assets/). Seeds are fixed: the same command gives the same rows, the same initial
model and the same training order.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs", "repro_cpu.yaml")
# run name -> (extra `train` flags, the folder it starts from, its rows). The base is trained on the sequential twins
# of train.jsonl, as a pretrained language model is; both models are fine-tuned from it on the same fresh rows
# (finetune.jsonl), as the paper's two models are fine-tuned from one pretrained model on one data set.
RUNS = {
    "base": (["--autoregressive-baseline"], "init", "train.jsonl"),
    "multiverse": ([], "base", "finetune.jsonl"),
    "autoregressive": (["--autoregressive-baseline"], "base", "finetune.jsonl"),
}
PAIR = ("multiverse", "autoregressive")
# steps of the shared base per task shape (the fine-tunes take the config's max_steps). The widened task's base
# needs twice the steps: its copy of each name's expression from the question (2-8 names, nested ones) is learnt
# late (`python -m multiverse.demo.diagnose --twin --limit 120` on held-out rows: 894 of 5,532 copied tokens wrong
# after 3,600 steps, 8 after 7,200; training/README.md)
BASE_STEPS = {"default": 3600, "wide": 7200}
HELD_OUT_FIELDS = "question=question,answer=deepseek_attempt"
SHAPE_SETTINGS = {"default": (), "wide": ("data.block_size=1536",)}  # wide traces reach 1,152 tokens (1% past 1,024)
FINE_TUNE_SHARE_SEED = 3  # which forkable fine-tuning rows keep their block under --parallel-share  # `multiverse eval --field` for heldout.jsonl


def write_rows(out: str, rows: int, held_out: int, shape: str = "default", parallel_share: float = 1.0) -> list[dict]:
    """train.jsonl (the base's rows), heldout.jsonl and finetune.jsonl (as many rows as train.jsonl) under `out`;
    returns the base's rows. No held-out question is in either training file. shape "wide": the widened task
    (multiverse/demo/wide.py; the held-out split holds every range's edges). parallel_share < 1: only that share
    of the forkable fine-tuning rows keeps its block, the rest are written sequentially (an under-parallel start)."""
    from multiverse.demo import remainders, wide

    splits = {"default": (remainders.train_rows, remainders.held_out_rows, remainders.fine_tune_rows),
              "wide": (wide.wide_train_rows, wide.wide_held_out_rows, wide.wide_fine_tune_rows)}
    train_rows, held_out_rows, fine_tune_rows = splits[shape]
    os.makedirs(out, exist_ok=True)
    train = train_rows(rows)
    held = held_out_rows(held_out, {r["question"] for r in train})
    tune = fine_tune_rows(rows, {r["question"] for r in held})
    if parallel_share < 1.0:
        tune = wide.under_parallel(tune, parallel_share, seed=FINE_TUNE_SHARE_SEED)
    remainders.write_jsonl(os.path.join(out, "train.jsonl"), train)
    remainders.write_jsonl(os.path.join(out, "heldout.jsonl"), held)
    remainders.write_jsonl(os.path.join(out, "finetune.jsonl"), tune)
    return train


def write_init(out: str, train: list[dict], hidden: int, layers: int) -> str:
    """out/init: the task tokenizer (trained on up to 2,000 training rows) and the random model both runs start from."""
    from multiverse.demo.tokenizer import task_tokenizer
    from multiverse.tiny import build_model

    corpus = [t for r in train[:2000] for t in (r["question"], r["deepseek_thinking_trajectory"], "Answer: 1")]
    tok = task_tokenizer(corpus)
    init = os.path.join(out, "init")
    build_model(tok, hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=4, seed=0).save_pretrained(init)
    tok.save_pretrained(init)
    return init


def train_command(name: str, out: str, steps: int | None, threads: int, extra: tuple[str, ...] = (),
                  base: str | None = None) -> list[str]:
    """The `multiverse train` command line of one run into out/<name> (`extra`: more `--set` items; `base`: the
    trained base the pair starts from, when not out/base)."""
    flags, start, rows = RUNS[name]
    origin = base if base is not None and start == "base" else os.path.join(out, start)
    cmd = [sys.executable, "-m", "multiverse.cli", "train", "--config", CONFIG, *flags, "--threads", str(threads),
           "--set", f"model.name_or_path={origin}",
           "--set", f"data.multiverse={os.path.join(out, rows)}",
           "--set", f"train.output_dir={os.path.join(out, name)}", *(a for item in extra for a in ("--set", item))]
    return cmd + (["--max-steps", str(steps)] if steps is not None else [])


def train_runs(names: list[str], out: str, steps: int | None, threads: int, jobs: int,
               extra: tuple[str, ...] = (), base: str | None = None) -> list[dict]:
    """Train `names` as child processes, `jobs` at a time (each with `threads` torch threads); their wall times.
    A run that fails stops the rest and raises."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending, running, done = list(names), [], []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            running.append((name, time.perf_counter(), subprocess.Popen(train_command(name, out, steps, threads, extra, base), env=env)))
        finished = [r for r in running if r[2].poll() is not None]
        if not finished:
            time.sleep(1.0)  # bounded by the children: each run ends at its max_steps
            continue
        name, start, proc = finished[0]
        running.remove(finished[0])
        if proc.returncode != 0:
            for _, _, other in running:
                other.terminate()
            raise SystemExit(f"multiverse train for {name} failed (exit {proc.returncode}); see its output above")
        seconds = round(time.perf_counter() - start, 1)  # its own wall time, measured when it ended
        stop_at_end_of_turn(os.path.join(out, name))
        done.append({"run": name, "output_dir": os.path.join(out, name), "seconds": seconds})
    return done


def install(out: str) -> list[str]:
    """Copy out/multiverse and out/autoregressive over the shipped models; returns the directories written."""
    from multiverse.demo import BASELINE_MODEL, DEFAULT_MODEL

    written = []
    for name, dest in (("multiverse", DEFAULT_MODEL), ("autoregressive", BASELINE_MODEL)):
        src = os.path.join(out, name)
        files = [f for f in sorted(os.listdir(src)) if os.path.isfile(os.path.join(src, f))]
        if "model.safetensors" not in files:
            raise SystemExit(f"{src}: no model.safetensors (train it first)")
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        for f in files:
            if f.endswith((".json", ".jinja", ".safetensors", ".yaml")) and f != "trainer_state.json":
                shutil.copy(os.path.join(src, f), dest)
        written.append(str(dest))
    return written


def stop_at_end_of_turn(run_dir: str) -> None:
    """Generation in run_dir ends at the end-of-turn token as well as at end of text."""
    from transformers import AutoTokenizer, GenerationConfig

    from multiverse.tiny import IM_END

    tok = AutoTokenizer.from_pretrained(run_dir)
    ids = [tok.convert_tokens_to_ids(IM_END), tok.eos_token_id]
    GenerationConfig(eos_token_id=ids, pad_token_id=tok.pad_token_id).save_pretrained(run_dir)


SWEEP = "48,64,96,128,192,256,384,512,768"  # critical-path budgets of the budget-control curve
SPEED_QUESTIONS = 64  # timed at batch 1 and at batch 16, ABBA, 2 rounds


def eval_commands(out: str, python: str = "multiverse") -> list[str]:
    """The `multiverse eval` runs that compare the two models on the held-out rows (greedy): accuracy of both at
    batch 16 (all held-out rows), paired wall-clock against the twin at batch 1 and at batch 16, and the
    critical-path budget sweep of both (its PNG)."""
    mv, ar = (shlex.quote(os.path.join(out, name)) for name in PAIR)
    held = shlex.quote(os.path.join(out, "heldout.jsonl"))
    ev = os.path.join(out, "eval")
    common = (f"--model {mv} --baseline-model {ar} --baseline-suffix '' --tasks {held} --field {HELD_OUT_FIELDS} "
              "--suffix '' --temperature 0 --max-new-tokens 1024 --batch-size 16")
    speed = f"--limit {SPEED_QUESTIONS} --compare-sequential --speed-questions {SPEED_QUESTIONS} --speed-rounds 2"
    return [
        f"{python} eval {common} --out {ev}/accuracy",
        f"{python} eval {common} {speed} --speed-batch-size 1 --out {ev}/speed-batch1",
        f"{python} eval {common} {speed} --speed-batch-size 16 --out {ev}/speed-batch16",
        f"{python} eval {common} --limit 200 --budgets {SWEEP} --budget-kind critical --out {ev}/budget",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/repro", help="data, initial model, the base and the two trained models")
    parser.add_argument("--rows", type=int, default=12000, help="rows of each training file (base, fine-tune)")
    parser.add_argument("--held-out", type=int, default=600, help="held-out rows")
    parser.add_argument("--shape", choices=["default", "wide"], default="default",
                        help="wide: the widened task (2-8 names, divisors 2-9, dividends to 150, 0-20 subtractions, "
                        "0-2 nested names, chains of 2-5; held-out rows on every range's edge)")
    parser.add_argument("--parallel-share", type=float, default=1.0, metavar="F",
                        help="share of the forkable fine-tuning rows written with a block; the rest sequential "
                        "(0.25: the under-parallel starting point of the learning chain)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--base-steps", type=int, help="steps of the shared base (default: 3,600; 7,200 for --shape wide)")
    parser.add_argument("--steps", type=int, help="steps of each fine-tune (default: the config's max_steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once (2: both, one core each)")
    parser.add_argument("--only", choices=sorted(RUNS), help="train one stage; multiverse and autoregressive start from OUT/base")
    parser.add_argument("--base", metavar="DIR", help="a trained base the pair starts from (no base is trained), e.g. "
                        "another OUT's base: the fully parallel pair of the learning chain shares the start's")
    parser.add_argument("--prepare-only", action="store_true", help="rows, tokenizer and initial model; no training")
    parser.add_argument("--evaluate", action="store_true", help="after training, run the `multiverse eval` commands")
    parser.add_argument("--install", action="store_true", help="after training, copy both models into multiverse/assets")
    parser.add_argument("--install-only", action="store_true", help="copy the trained models of --out, nothing else")
    args = parser.parse_args(argv)
    if args.install_only:
        print(json.dumps({"installed": install(args.out)}))
        return
    for flag, value in (("--rows", args.rows), ("--held-out", args.held_out), ("--jobs", args.jobs), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} {value}: must be >= 1")
    if not 0.0 <= args.parallel_share <= 1.0:
        parser.error(f"--parallel-share {args.parallel_share}: must be in [0, 1]")
    if args.base is not None and not args.prepare_only:  # checked before any file is written
        if not os.path.isfile(os.path.join(args.base, "config.json")):
            parser.error(f"--base {args.base}: no trained model there (config.json missing)")
        if args.only == "base":
            parser.error("--only base trains OUT/base: it takes no --base")
    train = write_rows(args.out, args.rows, args.held_out, args.shape, args.parallel_share)
    # a pair started from another run's base needs no initial model (the base brings its tokenizer)
    init = write_init(args.out, train, args.hidden, args.layers) if args.base is None or args.prepare_only else None
    print(json.dumps({"out": args.out, "init": init, "rows": args.rows, "held_out": args.held_out}))
    if not args.prepare_only:
        if args.only in (None, "base") and args.base is None:  # alone, on all the cores the pair will use
            steps = args.base_steps if args.base_steps is not None else BASE_STEPS[args.shape]
            for run in train_runs(["base"], args.out, steps, args.threads * args.jobs, 1, SHAPE_SETTINGS[args.shape]):
                print(json.dumps(run))
        if args.only != "base":
            for run in train_runs([args.only] if args.only else list(PAIR), args.out, args.steps, args.threads, args.jobs,
                                  SHAPE_SETTINGS[args.shape], args.base):
                print(json.dumps(run))
        if args.install:
            print(json.dumps({"installed": install(args.out)}))
    if args.evaluate and not args.prepare_only:
        for cmd in eval_commands(args.out, python=f"{shlex.quote(sys.executable)} -m multiverse.cli"):
            print(f"# {cmd}", flush=True)
            subprocess.run(cmd, shell=True, check=True)
        return
    print("# compare the two models (after training):")
    print("\n".join(eval_commands(args.out)))


if __name__ == "__main__":
    main()
