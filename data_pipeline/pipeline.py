"""The run: inputs, checks before any LLM work, the samples not yet journaled (concurrently), then outputs,
report, dataset and push, in that order.

Before the first request: the prompts, the inputs and their selection (offset, limit, shard), the output
folder's lock, the run's fingerprint (fingerprint.py) and the statistics tokenizer are loaded and checked, so
a bad setting fails in seconds, not after the LLM work. After it: curated.jsonl / failed.jsonl, then
report.json, then the `datasets` copy, then push_to_hub; a failing push is recorded in the report and kept.

Concurrency: `run.concurrency` workers each take the next sample from a queue, and the LLM client lets at
most `run.concurrency` calls be in flight (a sample's blocks are rewritten in parallel, so calls, not
samples, are the unit limited). Finished samples are journaled at once, in completion order, with their
structure statistics; the outputs follow the current input order, so the order of completion never shows.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from tqdm import tqdm

from data_pipeline import fingerprint
from data_pipeline import report as reports
from data_pipeline.config import ConfigError, CurateConfig, LLMConfig
from data_pipeline.inputs import load_rows, select, to_samples
from data_pipeline.lock import FolderLock
from data_pipeline.prompts import Prompt, load_prompts
from data_pipeline.sample import Sample
from data_pipeline.store import Journal, peek, write_outputs


@dataclass(frozen=True)
class RunOptions:
    """What one invocation does with the folder (not part of the configuration)."""

    dry_run: bool = False  # estimate calls, tokens and cost; send nothing, write nothing
    restart: bool = False  # archive the folder's earlier run (its settings may differ) and start anew
    retry_failed: bool = False  # curate the samples that failed for good again, asking the LLM afresh


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    curated: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    report: dict[str, Any]

    @property
    def complete(self) -> bool:
        """Every selected sample converted, and the push (if any) went through."""
        r = self.report
        return not r.get("dry_run") and r["failed"] == 0 and r["missing"] == 0 and r.get("push", {}).get("ok", True)


async def run_async(cfg: CurateConfig, console: Console | None = None,
                    options: RunOptions = RunOptions()) -> RunResult:
    console = console or Console(stderr=True)
    prompts = load_prompts(cfg.prompts_dir)
    samples = select(to_samples(load_rows(cfg.input), cfg.input), cfg.input)
    if options.dry_run:
        return _dry_run(cfg, samples, prompts, options)
    llm_cfg = cfg.llm.resolved()
    with FolderLock(cfg.out_dir):
        archived = fingerprint.check_or_restart(cfg.out_dir, fingerprint.settings(cfg, llm_cfg, prompts),
                                                options.restart)
        if archived:
            console.print(f"the earlier run in {cfg.out_dir} was moved to {archived}")
        journal = Journal(cfg.out_dir)
        todo = [s for s in samples if not journal.done(s.id, s.digest, options.retry_failed)]
        stale = _stale_stats(journal, samples, cfg)
        tokenizer = _tokenizer(cfg) if todo or stale else None
        try:
            for entry in stale:  # measured once, then kept: the next resume loads no tokenizer
                journal.append(entry | {"structure": _trace_record(entry, cfg, tokenizer)})
            calls = await _work(cfg, llm_cfg, prompts, todo, journal, len(samples), tokenizer) if todo \
                else {"requests": 0, "nothing_to_do": True}
        finally:
            journal.close()
        return _finish(cfg, samples, journal, calls, console)


def _finish(cfg: CurateConfig, samples: list[Sample], journal: Journal, calls: dict[str, Any],
            console: Console) -> RunResult:
    rows = [(s.index, journal.entries[s.id]) for s in samples if s.id in journal.entries]
    previous = reports.read(cfg.out_dir)
    curated, failed = write_outputs(cfg.out_dir, rows)
    entries = [e for _, e in rows]
    structure = _structure(entries, cfg)
    report = reports.build(entries, len(samples), calls, structure, cfg, previous)
    if cfg.output.save_dataset and (report["outputs"] != previous.get("outputs")
                                    or not (cfg.out_dir / "dataset").exists()):
        ds = _save_dataset(curated, cfg)
    else:
        ds = None
    if cfg.output.push_to_hub:
        report["push"] = _push(ds, curated, cfg)
        reports.write(report, cfg.out_dir)
        if not report["push"]["ok"]:
            console.print(f"[red]push_to_hub failed (the outputs and report.json are kept): "
                          f"{report['push']['error']}[/red]")
    return RunResult(cfg.out_dir, curated, failed, report)


async def _work(cfg: CurateConfig, llm_cfg: LLMConfig, prompts: dict[str, "Prompt"], todo: list[Sample],
                journal: Journal, total: int, tokenizer: Any) -> dict[str, Any]:
    """Curate `todo`; returns the client's counters. The client exists only here (a resume with nothing to
    do opens no connection)."""
    from data_pipeline.cache import ResponseCache
    from data_pipeline.curator import Curator  # the client (openai) only when there is work
    from data_pipeline.llm import LLM

    curator = Curator(cfg, LLM(llm_cfg, cfg.run, ResponseCache(cfg.cache_dir, cfg.cache.enabled)), prompts)
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    for s in todo:
        queue.put_nowait(s)
    bar = tqdm(total=total, initial=total - len(todo), desc="curate", unit="sample",
               disable=not cfg.run.progress, dynamic_ncols=True)
    counts = {"ok": 0, "failed": 0}

    async def worker() -> None:
        while not queue.empty():
            sample = queue.get_nowait()
            entry = await curator.curate(sample, journal.tries(sample.id))
            if entry["status"] == "ok" and tokenizer is not None:
                entry["structure"] = await asyncio.to_thread(_trace_record, entry, cfg, tokenizer)
            journal.append(entry)
            counts["ok" if entry["status"] == "ok" else "failed"] += 1
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"], calls=curator.llm.stats.requests,
                            cached=curator.llm.stats.cache_hits, refresh=False)
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(min(cfg.run.concurrency, len(todo)))))
    finally:
        bar.close()
        await curator.llm.close()
    return curator.llm.stats.as_dict()


# ---------------------------------------------------------------------------- statistics
def _tokenizer(cfg: CurateConfig) -> Any:
    """The statistics tokenizer, loaded before any request: a name that does not load is a ConfigError."""
    if cfg.tokenizer is None:
        return None
    from multiverse.tokens import load_tagged_tokenizer

    try:
        return load_tagged_tokenizer(cfg.tokenizer)
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one message naming the key
        raise ConfigError(f"tokenizer: cannot load {cfg.tokenizer!r} for the statistics ({type(err).__name__}: "
                          f"{err}); set `tokenizer` to a loadable name or path, or to null to skip them") from err


def _trace_record(entry: dict[str, Any], cfg: CurateConfig, tokenizer: Any) -> dict[str, Any] | None:
    from multiverse.structure import StructureError

    from data_pipeline.stats import as_record, trace_stats

    try:
        stats = trace_stats(entry["record"]["deepseek_thinking_trajectory_parallel"], tokenizer)
    except StructureError:
        return None
    return {"tokenizer": cfg.tokenizer, **as_record(stats)}


def _measured(entry: dict[str, Any], cfg: CurateConfig) -> bool:
    """The entry holds its statistics for the configured tokenizer (None: the trace does not parse)."""
    return "structure" in entry and (entry["structure"] is None or entry["structure"]["tokenizer"] == cfg.tokenizer)


def _stale_stats(journal: Journal, samples: list[Sample], cfg: CurateConfig) -> list[dict[str, Any]]:
    """Converted entries not yet measured with the configured tokenizer (an older run, another tokenizer)."""
    if cfg.tokenizer is None:
        return []
    entries = (journal.entries.get(s.id) for s in samples)
    return [e for e in entries if e is not None and e["status"] == "ok" and not _measured(e, cfg)]


def _structure(entries: list[dict[str, Any]], cfg: CurateConfig) -> dict[str, Any]:
    """The summary of the converted entries' statistics (every one is measured by now)."""
    if cfg.tokenizer is None:
        return {"traces": 0, "skipped": "no tokenizer configured"}
    from data_pipeline.stats import from_record, summarise

    records = [e["structure"] for e in entries if e["status"] == "ok"]
    return summarise([from_record(r) for r in records if r is not None], sum(r is None for r in records))


# ---------------------------------------------------------------------------- dataset, push, dry run
def _save_dataset(curated: list[dict[str, Any]], cfg: CurateConfig) -> Any:
    import datasets

    ds = datasets.Dataset.from_list(curated) if curated else datasets.Dataset.from_dict({})
    ds.save_to_disk(str(cfg.out_dir / "dataset"))
    return ds


def _push(ds: Any, curated: list[dict[str, Any]], cfg: CurateConfig) -> dict[str, Any]:
    import datasets

    try:
        ds = ds if ds is not None else datasets.Dataset.from_list(curated)
        ds.push_to_hub(cfg.output.push_to_hub, private=cfg.output.private)
    except Exception as err:  # noqa: BLE001 - the data is on disk; the failure is reported, not raised
        return {"repo": cfg.output.push_to_hub, "ok": False, "error": f"{type(err).__name__}: {err}"}
    return {"repo": cfg.output.push_to_hub, "ok": True}


def _dry_run(cfg: CurateConfig, samples: list[Sample], prompts: dict[str, Any], options: RunOptions) -> RunResult:
    from data_pipeline.estimate import counter, estimate

    tokenizer = _tokenizer(cfg) if cfg.tokenizer not in (None, "tiny") else None
    entries = peek(cfg.out_dir)  # read only: a dry run never writes, so it takes no lock
    todo = [s for s in samples if s.id not in entries or entries[s.id].get("retryable")
            or (options.retry_failed and entries[s.id]["status"] != "ok")]
    report = estimate(todo, prompts, cfg, counter(tokenizer)) | {"selected": len(samples)}
    return RunResult(cfg.out_dir, [], [], report)


def run(cfg: CurateConfig, console: Console | None = None, options: RunOptions = RunOptions()) -> RunResult:
    return asyncio.run(run_async(cfg, console, options))
