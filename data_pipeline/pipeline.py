"""The run: load inputs, curate the samples not yet journaled (concurrently), then write outputs and report.

Concurrency: `run.concurrency` workers each take the next sample from a queue, and the LLM client lets at
most `run.concurrency` calls be in flight (a sample's blocks are rewritten in parallel, so calls, not
samples, are the unit limited). Finished samples are journaled at once, in completion order; the outputs
are rebuilt in input order at the end, so the order of completion never shows in them.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from tqdm import tqdm

from data_pipeline import report as reports
from data_pipeline.cache import ResponseCache
from data_pipeline.config import CurateConfig
from data_pipeline.curator import Curator, Sample
from data_pipeline.inputs import load_rows, to_samples
from data_pipeline.llm import LLM
from data_pipeline.prompts import load_prompts
from data_pipeline.store import Journal, ordered, write_outputs


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    curated: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    report: dict[str, Any]


async def run_async(cfg: CurateConfig, console: Console | None = None) -> RunResult:
    console = console or Console(stderr=True)
    prompts = load_prompts(cfg.prompts_dir)
    samples = to_samples(load_rows(cfg.input), cfg.input)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(cfg.out_dir)
    todo = [s for s in samples if not journal.done(s.id)]
    llm = LLM(cfg.llm.resolved(), cfg.run, ResponseCache(cfg.cache_dir, cfg.cache.enabled))
    try:
        await _work(Curator(cfg, llm, prompts), todo, journal, cfg, len(samples))
    finally:
        journal.close()
        await llm.close()
    entries = {s.id: journal.entries[s.id] for s in samples if s.id in journal.entries}
    curated, failed = write_outputs(cfg.out_dir, entries)
    if cfg.output.save_dataset:
        _save_dataset(curated, cfg)
    report = reports.build(ordered(entries), len(samples), llm.stats.as_dict(), _structure(curated, cfg),
                           cfg.checks.max_distance, cfg.out_dir)
    return RunResult(cfg.out_dir, curated, failed, report)


async def _work(curator: Curator, todo: list[Sample], journal: Journal, cfg: CurateConfig, total: int) -> None:
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    for s in todo:
        queue.put_nowait(s)
    bar = tqdm(total=total, initial=total - len(todo), desc="curate", unit="sample",
               disable=not cfg.run.progress, dynamic_ncols=True)
    counts = {"ok": 0, "failed": 0}

    async def worker() -> None:
        while not queue.empty():
            sample = queue.get_nowait()
            entry = await curator.curate(sample)
            journal.append(entry)
            counts["ok" if entry["status"] == "ok" else "failed"] += 1
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"], calls=curator.llm.stats.requests,
                            cached=curator.llm.stats.cache_hits, refresh=False)
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(min(cfg.run.concurrency, len(todo)))))
    finally:
        bar.close()


def _structure(curated: list[dict[str, Any]], cfg: CurateConfig) -> dict[str, Any]:
    if cfg.tokenizer is None:
        return {"traces": 0, "skipped": "no tokenizer configured"}
    from data_pipeline.stats import stats_of  # torch: only now, after the LLM work
    from multiverse.tokens import load_tagged_tokenizer

    traces = [(r["id"], r["deepseek_thinking_trajectory_parallel"]) for r in curated]
    return stats_of(traces, load_tagged_tokenizer(cfg.tokenizer))[0]


def _save_dataset(curated: list[dict[str, Any]], cfg: CurateConfig) -> None:
    import datasets

    ds = datasets.Dataset.from_list(curated) if curated else datasets.Dataset.from_dict({})
    ds.save_to_disk(str(cfg.out_dir / "dataset"))
    if cfg.output.push_to_hub:
        ds.push_to_hub(cfg.output.push_to_hub, private=cfg.output.private)


def run(cfg: CurateConfig, console: Console | None = None) -> RunResult:
    return asyncio.run(run_async(cfg, console))
