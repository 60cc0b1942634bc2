"""Kill-safe progress: an append-only journal of finished samples, and the final outputs built from it.

The journal (`journal.jsonl`) gets one line per finished sample, flushed and fsynced before the next is
written. A kill can only tear the last line; opening the journal drops such a tail. Resume skips the ids
already journaled (except failures marked retryable: endpoint outages). The outputs are rebuilt from the
journal in input order, first entry per id, written to temporary files and renamed, so they never hold
duplicates or half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

JOURNAL = "journal.jsonl"
CURATED = "curated.jsonl"
FAILED = "failed.jsonl"


class Journal:
    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self.entries: dict[str, dict[str, Any]] = {}
        for entry in _read_lines(self.path):
            self._keep(entry)
        self._file = open(self.path, "a", encoding="utf-8")

    def done(self, sample_id: str) -> bool:
        entry = self.entries.get(sample_id)
        return entry is not None and not entry.get("retryable")

    def append(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._keep(entry)

    def _keep(self, entry: dict[str, Any]) -> None:
        """The first final entry of an id wins; a retryable failure is replaced by any later entry."""
        if not self.done(entry["id"]):
            self.entries[entry["id"]] = entry

    def close(self) -> None:
        self._file.close()

    def _drop_torn_tail(self) -> None:
        """Cut the file after its last newline (a kill mid-write leaves a partial last line)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(cut)


def _read_lines(path: Path) -> Iterable[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def ordered(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries in input order."""
    return sorted(entries.values(), key=lambda e: e["index"])


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomic: a temporary file renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_outputs(out_dir: Path, entries: dict[str, dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """curated.jsonl (converted records) and failed.jsonl (id, stage, reasons), both in input order."""
    rows = ordered(entries)
    curated = [e["record"] for e in rows if e["status"] == "ok"]
    failed = [{"id": e["id"], "index": e["index"], "stage": e["stage"], "reasons": e["reasons"],
               "retryable": e.get("retryable", False)} for e in rows if e["status"] != "ok"]
    write_jsonl(Path(out_dir) / CURATED, curated)
    write_jsonl(Path(out_dir) / FAILED, failed)
    return curated, failed
