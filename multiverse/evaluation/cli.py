"""`multiverse eval`: accuracy, degree of parallelism and speedup on AIME24/25, MATH500, GPQA-Diamond."""
from __future__ import annotations

import argparse
import os

from multiverse.evaluation.report import print_table, save, summarise
from multiverse.evaluation.runner import PARALLEL_SUFFIX, EvalConfig, evaluate
from multiverse.evaluation.tasks import TASKS, load_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from multiverse.demo import DEFAULT_MODEL

    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="local model directory or hub name "
                        "(default: the tiny model shipped with the package)")
    parser.add_argument("--tasks", default="aime24", help=f"comma-separated: {', '.join(TASKS)}")
    parser.add_argument("--data-dir", help="directory with local copies (e.g. ../shared/data); default: the hub")
    parser.add_argument("--limit", type=int, help="first N problems per task")
    parser.add_argument("--samples", type=int, default=1, help="generations per problem (pass@1 averaged)")
    parser.add_argument("--max-new-tokens", type=int, default=4096, help="budget of sampled tokens per generation")
    parser.add_argument("--max-critical-tokens", type=int, help="latency budget along the critical path")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--batch-size", type=int, default=8, help="generations decoded together")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--suffix", default=PARALLEL_SUFFIX, help="appended to each question ('' for none)")
    parser.add_argument("--compare-sequential", action="store_true", help="also decode with parallel=False: speedup")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the model's)")
    parser.add_argument("--out", default="eval_out", help="directory for results.jsonl, summary.json, parallelism.png")
    from engine.backend import add_backend_arguments

    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from engine.api import MultiverseLM
    from multiverse.errors import check_choices

    check_choices("--tasks", [name.strip() for name in args.tasks.split(",")], list(TASKS))  # before the model

    config = EvalConfig(
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        max_critical_tokens=args.max_critical_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
        suffix=args.suffix,
    )
    problems = [
        (name, p) for name in args.tasks.split(",") for p in load_task(name.strip(), data_dir=args.data_dir, limit=args.limit)
    ]
    from engine.backend import remote_from_args

    lm = remote_from_args(args, args.model) or MultiverseLM(args.model, device=args.device)
    if not args.compare_sequential:
        baseline = None
    elif args.backend == "sglang":  # the same server, decoding without forks
        baseline = remote_from_args(args, args.model, parallel=False)
    else:
        baseline = MultiverseLM(lm.model, lm.tokenizer, device=args.device, parallel=False)
    records = evaluate(lm, problems, config, baseline)
    summary = summarise(records)
    print_table(summary)
    for path in save(records, summary, args.out):
        print(f"wrote {os.path.relpath(path)}")
    return 0
