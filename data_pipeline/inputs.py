"""Input rows -> Samples: a local .jsonl / .json / .parquet file, or a data set on the Hugging Face hub.

Required fields: the question and the trace (names from the config). Every other field is carried through
to the output. Rows without an id get "row-<index>" (index: the row's position in the whole input, so ids do
not depend on the selection); duplicate ids are an error, because the output is keyed by id.
`select` then applies input.offset, input.limit and input.shard, in that order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_pipeline.config import ConfigError, InputConfig
from data_pipeline.sample import Sample


def load_rows(cfg: InputConfig) -> list[dict[str, Any]]:
    path = Path(cfg.source)
    if path.suffix in (".jsonl", ".json", ".parquet") or path.exists():
        rows = _local(path)
    else:
        rows = _hub(cfg.source, cfg.split)
    return rows


def select(samples: list[Sample], cfg: InputConfig) -> list[Sample]:
    """The samples this run covers: skip `offset`, keep `limit`, then every n-th from i for shard "i/n".
    The shards of one selection are disjoint and together hold every selected sample."""
    end = None if cfg.limit is None else cfg.offset + cfg.limit
    chosen = samples[cfg.offset:end]
    parts = cfg.shard_parts()
    if parts is not None:
        i, n = parts
        chosen = chosen[i::n]
    return chosen


def _local(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise ConfigError(f"input.source: {path} does not exist")
    if path.suffix == ".parquet":
        import datasets

        return [dict(r) for r in datasets.Dataset.from_parquet(str(path))]
    rows = []
    with open(path, encoding="utf-8") as f:
        if path.suffix == ".json":
            data = json.load(f)
            return list(data) if isinstance(data, list) else [data]
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}, line {n}: not valid JSON ({err.msg})") from err
    return rows


def _hub(name: str, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return [dict(r) for r in datasets.load_dataset(name, split=split)]
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one clear message
        raise ConfigError(f"input.source: cannot load {name!r} (split {split!r}) from the hub: {err}") from err


def to_samples(rows: list[dict[str, Any]], cfg: InputConfig) -> list[Sample]:
    if rows:
        for key in (cfg.question_field, cfg.trace_field):
            if key not in rows[0]:
                raise ConfigError(f"input rows have no field {key!r} (fields: {', '.join(rows[0])}); "
                                  "set input.question_field / input.trace_field")
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        sid = str(row.get(cfg.id_field) or f"row-{index}")
        if sid in seen:
            raise ConfigError(f"input rows {seen[sid]} and {index} share the id {sid!r}; ids must be unique")
        seen[sid] = index
        samples.append(Sample(index, sid, str(row.get(cfg.question_field) or ""),
                              str(row.get(cfg.trace_field) or ""), _plain(row)))
    return samples


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of a row (hub rows may hold numpy scalars or similar)."""
    return json.loads(json.dumps(row, ensure_ascii=False, default=str))
