"""The Python API: `curate(config)` runs the curator; `structure_stats(files)` computes --stats."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from data_pipeline.config import CurateConfig, from_dict, load_config
from data_pipeline.pipeline import RunOptions, RunResult, run
from data_pipeline.stats import read_traces, stats_of
from multiverse.tokens import load_tagged_tokenizer


def curate(config: CurateConfig | dict[str, Any] | str | Path, overrides: list[str] | tuple[str, ...] = (),
           *, dry_run: bool = False, restart: bool = False, retry_failed: bool = False) -> RunResult:
    """Run (or resume) a curation. `config`: a CurateConfig, a mapping, or the path of a YAML file.
    dry_run: estimate only; restart: archive the folder's earlier run; retry_failed: redo failed samples."""
    if isinstance(config, dict):
        cfg = from_dict(config)
    elif isinstance(config, (str, Path)):
        cfg = load_config(config, overrides)
    else:
        cfg = config
    return run(cfg, options=RunOptions(dry_run=dry_run, restart=restart, retry_failed=retry_failed))


def structure_stats(files: list[str | Path], tokenizer: str = "tiny", field: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Statistics (incl. degree of parallelism) of the traces in `files`, and the traces that do not parse."""
    return stats_of(read_traces(files, field), load_tagged_tokenizer(tokenizer))
