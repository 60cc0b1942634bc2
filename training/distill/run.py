"""Self-distillation rounds: sample K completions per question with the engine, keep the correct and valid ones
(shortest critical path per question), fine-tune on them, and start the next round from the result.

    round N:  model(N-1) --engine, seeds (seed, N, question, sample)--> rollouts
              --judge (eval grader, structure)--> kept.jsonl (+ provenance) --SFT (training.run.train)--> model(N)
Files per round under distill.output_dir/round-N: kept.jsonl, summary.json (counts and means), model/, and with
distill.replay replay.jsonl (the kept rows of rounds 1..N, what round N fine-tunes on).
A round whose model/ is complete is skipped, and kept.jsonl is reused when present, so the command can be run
again after an interruption and continues where it stopped (the fine-tune itself resumes with sft.train.resume).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from training import rollouts
from training.distill.config import DistillConfig
from training.distill.keep import kept_rows
from training.judge import Verdict, judge

SUMMARY = "summary.json"


Groups = list[list[rollouts.Rollout]]  # K rollouts per question, in question order
Verdicts = list[list[Verdict]]  # aligned with Groups


def sample_share(
    cfg: DistillConfig, n: int, model: str, questions: list[rollouts.Question], worker: int = 0
) -> tuple[Groups, Verdicts]:
    """(groups, verdicts) of one engine over `questions`, in their order (a worker process when distill.workers > 1)."""
    from engine.api import MultiverseLM

    lm = MultiverseLM(model, **cfg.distill.engine)
    step = cfg.distill.batch_questions
    groups: Groups = []
    verdicts: Verdicts = []
    name = f"round {n}: sampling" + (f" [{worker + 1}/{cfg.distill.workers}]" if cfg.distill.workers > 1 else "")
    try:
        for i in tqdm(range(0, len(questions), step), desc=name, unit="batch", position=worker):
            for group in rollouts.sample(lm, questions[i: i + step], cfg.sampling, cfg.distill.seed, "distill", n):
                groups.append(group)
                verdicts.append([judge(r, cfg.reward) for r in group])
    finally:
        lm.close()
    return groups, verdicts


def sample_all(cfg: DistillConfig, n: int, model: str, questions: list[rollouts.Question]) -> tuple[Groups, Verdicts]:
    """Every question's group and verdicts, in question order, from distill.workers processes (contiguous shares)."""
    workers = min(cfg.distill.workers, len(questions))
    if workers <= 1:
        return sample_share(cfg, n, model, questions)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(questions) // workers)
    shares = [questions[i * size: (i + 1) * size] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = [pool.submit(sample_share, cfg, n, model, share, w) for w, share in enumerate(shares)]
        parts = [d.result() for d in done]
    return [g for p in parts for g in p[0]], [v for p in parts for v in p[1]]


def sample_round(cfg: DistillConfig, n: int, model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, summary) of round n's sampling from `model`."""
    task, skip = cfg.round_questions(n)
    questions = rollouts.load_questions(task)[skip:]  # each keeps its row index in data.tasks (seeds, provenance)
    if not questions:  # read before the engine starts: nothing to close on this error
        raise RuntimeError(f"round {n}: {cfg.data.tasks} has no rows past the first {skip} (distill.fresh_questions "
                           f"needs rounds x data.limit = {cfg.distill.rounds * (cfg.data.limit or 0)} rows)")
    groups, verdicts = sample_all(cfg, n, model, questions)
    rows = kept_rows(groups, verdicts, n, model, cfg.reward.answer_prefix)
    flat = [(r, v) for g, vs in zip(groups, verdicts) for r, v in zip(g, vs)]
    kept_forked = [row["provenance"]["forks"] > 0 for row in rows]
    summary = {
        "round": n, "model": model, "questions": len(questions), "completions": len(flat),
        "correct": sum(v.correct for _, v in flat), "valid": sum(v.valid for _, v in flat),
        "correct_and_valid": sum(v.correct and v.valid for _, v in flat), "kept": len(rows),
        "kept_forked_fraction": round(sum(kept_forked) / max(1, len(rows)), 4),
        "sampled_forked_fraction": round(sum(r.forks > 0 for r, _ in flat) / max(1, len(flat)), 4),
        "kept_mean_critical_path": round(sum(row["provenance"]["critical_path"] for row in rows) / max(1, len(rows)), 2),
        "right_by_luck": sum(bool(v.steps) for _, v in flat),  # right answer, false steps (reward.steps)
        "invalid_reasons": _reasons([v.why for _, v in flat if not v.valid]),
    }
    return rows, summary


def _reasons(whys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for why in whys:
        key = why.split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out


def round_done(folder: Path) -> bool:
    return (folder / "model" / "multiverse_train.yaml").is_file() and (folder / "model" / "config.json").is_file()


def replay_file(cfg: DistillConfig, n: int) -> Path:
    """round-n/replay.jsonl: the kept rows of rounds 1..n in round order (rewritten whole, atomically)."""
    out = Path(cfg.distill.output_dir, f"round-{n}", "replay.jsonl")
    parts = [Path(cfg.distill.output_dir, f"round-{i}", "kept.jsonl") for i in range(1, n + 1)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise RuntimeError(f"distill.replay: round {n} needs the kept rows of every earlier round; missing {missing}")
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(p.read_text() for p in parts))
    tmp.replace(out)
    return out


def distill(cfg: DistillConfig) -> list[dict[str, Any]]:
    """Run every round not done yet; returns each round's summary."""
    from training.run import train

    model, summaries = cfg.model.name_or_path, []
    for n in range(1, cfg.distill.rounds + 1):
        folder = Path(cfg.distill.output_dir, f"round-{n}")
        kept = folder / "kept.jsonl"
        if not round_done(folder):
            if not kept.is_file():
                rows, summary = sample_round(cfg, n, model)
                if not rows:
                    raise RuntimeError(f"round {n}: no completion of {model} was correct and valid; nothing to fine-tune on")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / SUMMARY).write_text(json.dumps(summary, indent=1))
                tmp = kept.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
                tmp.replace(kept)  # a kill during sampling leaves no half file
                print(json.dumps({"event": "kept", **summary}))
            train(cfg.round_sft(n, model, str(replay_file(cfg, n) if cfg.distill.replay else kept)))
        summaries.append(json.loads((folder / SUMMARY).read_text()))
        model = str(folder / "model")
    return summaries
