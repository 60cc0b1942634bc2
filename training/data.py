"""Rows -> Examples: load a Hugging Face dataset or a local jsonl/json/parquet file and pick the fields.

An Example is one conversation to train on: the question, the assistant's reasoning trace (always wrapped in
<Think> ... </Think>), the final attempt (may be empty) and its kind, which decides the prompt suffix and how the
trace is encoded. Kinds: "multiverse" (a trace with <Parallel> blocks) and "autoregressive" (plain sequential
text, including the sequential twins of Multiverse traces used by the baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiverse.structure import StructureError, sequential_twin
from training.config import ConfigError, DataConfig

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Example:
    question: str
    trace: str  # "<Think>...</Think>"
    attempt: str
    kind: str  # multiverse | autoregressive
    origin: str  # "<source>#<row>" for error messages


def open_dataset(source: str, cfg: DataConfig, split: str | None = None) -> Any:
    """A `datasets.Dataset` from a local jsonl/json/parquet file, a save_to_disk folder or a hub split."""
    import datasets

    path = Path(source)
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise ConfigError(f"data file {source} does not exist")
        return datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
    if path.is_dir() and (path / "dataset_info.json").exists():
        return datasets.load_from_disk(str(path))
    return datasets.load_dataset(source, cfg.subset, split=split or cfg.split)


def load_rows(source: str, cfg: DataConfig, split: str | None = None) -> list[dict[str, Any]]:
    """All rows of a local file or a hub dataset split, as plain dicts (first `max_rows` when set)."""
    ds = open_dataset(source, cfg, split)
    if cfg.max_rows is not None:
        ds = ds.select(range(min(cfg.max_rows, len(ds))))
    return [dict(row) for row in ds]


def wrap_think(text: str) -> str:
    """The trace inside one <Think> ... </Think> (kept as is when it already starts with <Think>)."""
    body = text.strip()
    if body.startswith("<Think>"):
        return body
    return f"<Think>\n{body}\n</Think>"


def _field(row: dict[str, Any], name: str, origin: str, required: bool = True) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ConfigError(f"{origin}: field {name!r} is missing or empty (row keys: {', '.join(sorted(row))})")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def multiverse_examples(rows: list[dict[str, Any]], source: str, cfg: DataConfig, twin: bool) -> list[Example]:
    """Examples from Multiverse rows; with `twin` each trace becomes its sequential twin (the baseline)."""
    f = cfg.fields
    out = []
    for i, row in enumerate(rows):
        origin = f"{source}#{i}"
        trace = _field(row, f.parallel, origin)
        kind = "multiverse"
        if twin:
            try:
                trace, kind = sequential_twin(trace), "autoregressive"
            except StructureError as e:
                raise ConfigError(f"{origin}: cannot build the sequential twin: {e}") from e
        attempt = _field(row, f.attempt, origin, required=False)
        out.append(Example(_field(row, f.question, origin), wrap_think(trace), attempt, kind, origin))
    return out


def autoregressive_examples(rows: list[dict[str, Any]], source: str, cfg: DataConfig) -> list[Example]:
    f = cfg.fields
    out = []
    for i, row in enumerate(rows):
        origin = f"{source}#{i}"
        trace = wrap_think(_field(row, f.sequential, origin))
        attempt = _field(row, f.attempt, origin, required=False)
        out.append(Example(_field(row, f.question, origin), trace, attempt, "autoregressive", origin))
    return out


def load_examples(cfg: DataConfig, baseline: bool) -> tuple[list[Example], list[Example]]:
    """(multiverse-side examples, autoregressive examples). In the baseline the first list holds twins.

    Without `data.autoregressive`, autoregressive examples come from the `sequential` column of the Multiverse
    rows when every row has it (Multiverse-1K keeps the original s1K-1.1 trace there).
    """
    mv_rows = load_rows(cfg.multiverse, cfg) if cfg.multiverse else []
    mv = multiverse_examples(mv_rows, cfg.multiverse or "", cfg, twin=baseline)
    if cfg.autoregressive:
        ar = autoregressive_examples(load_rows(cfg.autoregressive, cfg), cfg.autoregressive, cfg)
    elif mv_rows and all(row.get(cfg.fields.sequential) for row in mv_rows):
        ar = autoregressive_examples(mv_rows, cfg.multiverse or "", cfg)
    else:
        ar = []
    return mv, ar
