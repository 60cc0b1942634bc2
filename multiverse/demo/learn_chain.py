"""Issue 23's learning chain on the widened task, as one command (measured: training/README.md).

    python -m multiverse.demo.learn_chain --out runs/wide            # print every command, run nothing
    python -m multiverse.demo.learn_chain --out runs/wide --run      # run them in order, timing each stage

Stages, each a `multiverse` command (so each can be rerun alone):
  start     reproduce --shape wide --parallel-share 0.25: base, then the under-parallel Multiverse model (a
            quarter of the forkable fine-tuning rows keep their block) and its twin (the AR baseline)
  full      a Multiverse model from the same base on fully parallel rows (OUT-full/multiverse): the parallelism
            RL is compared with (the twin would equal the start's: a sequential row is its own twin)
  distill   self-distillation rounds from the start (training/configs/wide_distill_cpu.yaml)
  rl        parallel-aware RL from the last round (training/configs/wide_rl_cpu.yaml)
  no_bonus  RL continued for a quarter of its steps with the acceleration bonus off (the collapse check)
  eval      `multiverse eval` of every stage's model on the held-out split (greedy, every range's edges),
            beside the twin, the paired wall clock at batch 1 of the RL model against the start (forking), and
            the stage table (multiverse.demo.chain_report: OUT/eval/chain.md)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

CONFIGS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs"))
HELD_OUT_FIELDS = "question=question,answer=deepseek_attempt"


def stage_commands(out: str, rounds: int, rl_steps: int, mv: str = "multiverse", python: str = "python") -> dict[str, list[str]]:
    """Stage name -> its shell commands (`mv`: how to call the multiverse command, `python`: the interpreter)."""
    q = shlex.quote
    repro = f"{python} -m multiverse.demo.reproduce --shape wide"
    distilled = os.path.join(out, "distill", f"round-{rounds}", "model")
    rl, no_bonus = os.path.join(out, "rl"), os.path.join(out, "rl-no-bonus")
    models = {"start": os.path.join(out, "multiverse"), "full": os.path.join(f"{out}-full", "multiverse"),
              "distill": distilled, "rl": rl, "no_bonus": no_bonus}
    common = (f"--baseline-model {q(os.path.join(out, 'autoregressive'))} --baseline-suffix '' "
              f"--tasks {q(os.path.join(out, 'heldout.jsonl'))} --field {HELD_OUT_FIELDS} --suffix '' "
              "--temperature 0 --max-new-tokens 2048 --batch-size 64")
    evals = [f"{mv} eval --model {q(path)} {common} --out {q(os.path.join(out, 'eval', name))}" for name, path in models.items()]
    speed = (f"--tasks {q(os.path.join(out, 'heldout.jsonl'))} --field {HELD_OUT_FIELDS} --suffix '' --temperature 0 "
             "--max-new-tokens 2048 --limit 64 --compare-sequential --speed-questions 64 --speed-rounds 2 --speed-batch-size 1")
    evals.append(f"{mv} eval --model {q(rl)} --baseline-model {q(models['start'])} --baseline-forks --baseline-suffix '' "
                 f"{speed} --out {q(os.path.join(out, 'eval', 'rl-vs-start-batch1'))}")
    evals.append(f"{python} -m multiverse.demo.chain_report --out {q(out)}")
    tasks = q(os.path.join(out, "finetune.jsonl"))
    return {
        "start": [f"{repro} --parallel-share 0.25 --out {q(out)}"],
        "full": [f"{repro} --out {q(out + '-full')} --base {q(os.path.join(out, 'base'))} --only multiverse"],
        "distill": [f"{mv} train --stage distill --threads 2 "
                    f"--config {q(os.path.join(CONFIGS, 'wide_distill_cpu.yaml'))} "
                    f"--model {q(models['start'])} --data {tasks} --output-dir {q(os.path.join(out, 'distill'))} "
                    f"--set distill.rounds={rounds}"],
        "rl": [f"{mv} train --stage rl --config {q(os.path.join(CONFIGS, 'wide_rl_cpu.yaml'))} --model {q(distilled)} "
               f"--data {tasks} --output-dir {q(rl)} --max-steps {rl_steps} --resume auto"],
        "no_bonus": [f"{mv} train --stage rl --config {q(os.path.join(CONFIGS, 'wide_rl_cpu.yaml'))} --model {q(rl)} "
                     f"--data {tasks} --output-dir {q(no_bonus)} --max-steps {max(1, rl_steps // 4)} "
                     "--set reward.acceleration=0 --resume auto"],
        "eval": evals,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/wide", help="the chain's folder (OUT-full holds the fully parallel pair)")
    parser.add_argument("--rounds", type=int, default=3, help="self-distillation rounds (each on fresh questions)")
    parser.add_argument("--rl-steps", type=int, default=120, help="RL steps (the no-bonus run continues for a quarter)")
    parser.add_argument("--only", action="append", choices=["start", "full", "distill", "rl", "no_bonus", "eval"],
                        help="run only these stages (repeatable); default: all, in order")
    parser.add_argument("--run", action="store_true", help="run the commands (else print them)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.rl_steps < 1:
        parser.error("--rounds and --rl-steps must be >= 1")
    python = shlex.quote(sys.executable)
    stages = stage_commands(args.out, args.rounds, args.rl_steps, f"{python} -m multiverse.cli" if args.run else "multiverse",
                            python if args.run else "python")
    for name, commands in stages.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        for cmd in commands:
            print(f"# {name}: {cmd}" if args.run else cmd, flush=True)
            if args.run:
                subprocess.run(cmd, shell=True, check=True)
        if args.run:
            print(json.dumps({"stage": name, "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
