"""The tokenisation cache: the rows a run trains and evaluates on, stored once and reused by every process and run.

Key = sha256 of (format version, mode, every data setting, the sources' digests (file sha256 or hub fingerprint),
the tokenizer digest). One entry is one `.npz` file in `<cache_dir>/tokens/`:

    <split>.<column>   int32 [sum of row lengths]   the rows of `split` (train | eval) concatenated, per column
    <split>.offsets    int64 [rows + 1]             row r is [offsets[r], offsets[r + 1])
    meta               a JSON string: {"stats": EncodeStats fields, "columns", "splits", "sha256" of the rows}

It is written to a temporary name and renamed, so a reader sees a whole entry or none; a damaged entry is ignored
(and rewritten). Under `main_process_first` rank 0 writes it and the other processes of a shared file system read it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from training.config import Config

FORMAT = 1
Sample = dict[str, list[int]]


def cache_dir(cfg: Config) -> Path:
    root = cfg.data.cache_dir or os.environ.get("MULTIVERSE_CACHE") or Path.home() / ".cache" / "multiverse"
    return Path(root) / "tokens"


def key(cfg: Config, tokenizer_sha256: str, digests: dict[str, Any]) -> str:
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("token_cache", "cache_dir")}
    blob = json.dumps([FORMAT, cfg.train.mode, data, digests, tokenizer_sha256], sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


def _columns(rows: list[Sample]) -> list[str]:
    return [c for c in ("input_ids", "labels", "doc_ids") if rows and all(c in r for r in rows)]


def to_arrays(split: str, rows: list[Sample]) -> dict[str, np.ndarray]:
    lengths = np.array([len(r["input_ids"]) for r in rows], dtype=np.int64)
    out = {f"{split}.offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
    for c in _columns(rows):
        out[f"{split}.{c}"] = np.fromiter((t for r in rows for t in r[c]), dtype=np.int32, count=int(lengths.sum()))
    return out


def from_arrays(split: str, arrays: Any, columns: list[str]) -> list[Sample]:
    offsets = arrays[f"{split}.offsets"]
    cols = {c: arrays[f"{split}.{c}"].tolist() for c in columns if f"{split}.{c}" in arrays}
    return [{c: v[offsets[r]: offsets[r + 1]] for c, v in cols.items()} for r in range(len(offsets) - 1)]


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name, array in sorted(arrays.items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _all_arrays(splits: dict[str, list[Sample]]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for split, rows in sorted(splits.items()):
        arrays |= to_arrays(split, rows)
    return arrays


def rows_sha256(splits: dict[str, list[Sample]]) -> str:
    """A digest of the rows' token ids, labels and doc ids (what the fingerprint compares)."""
    return _digest(_all_arrays(splits))


def save(path: Path, splits: dict[str, list[Sample]], stats: dict[str, Any]) -> str:
    """Write the entry; returns the rows' sha256 (stored in it, so a cache hit need not hash again)."""
    arrays = _all_arrays(splits)
    columns = sorted({c for rows in splits.values() for c in _columns(rows)})
    sha = _digest(arrays)
    meta = {"stats": stats, "columns": columns, "splits": sorted(splits), "sha256": sha}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)
    return sha


def load(path: Path) -> tuple[dict[str, list[Sample]], dict[str, Any], str] | None:
    """(rows per split, stats, rows sha256) of a whole entry; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            splits = {s: from_arrays(s, arrays, meta["columns"]) for s in meta["splits"]}
    except (OSError, ValueError, KeyError) as e:
        print(json.dumps({"event": "token_cache_unreadable", "path": str(path), "error": str(e)}))
        return None
    return splits, meta["stats"], meta["sha256"]
