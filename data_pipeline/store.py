"""Kill-safe progress: an append-only journal of finished samples, and the final outputs built from it.

The journal (`journal.jsonl`) gets one line per finished sample, flushed and fsynced before the next is
written. A kill can only tear the last line; opening the journal drops such a tail. Resume skips the ids
already journaled with the same input row (except failures marked retryable: endpoint outages; and every
failure when asked to retry failed samples). The latest entry of an id wins (one process writes a folder at
a time: see lock.py). The outputs are rebuilt from the journal in the order of the current input, one entry
per id, written to temporary files and renamed, so they never hold duplicates or half a file.
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

    def done(self, sample_id: str, digest: str | None = None, retry_failed: bool = False) -> bool:
        """Journaled for good: not a retryable failure, the same input row (when `digest` is given), and
        not a failure when `retry_failed`."""
        entry = self.entries.get(sample_id)
        if entry is None or entry.get("retryable") or (retry_failed and entry["status"] != "ok"):
            return False
        return digest is None or entry.get("input", digest) == digest

    def tries(self, sample_id: str) -> int:
        """How many rounds the sample went through (0: never journaled)."""
        entry = self.entries.get(sample_id)
        return 0 if entry is None else entry.get("round", 0) + 1

    def append(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._keep(entry)

    def _keep(self, entry: dict[str, Any]) -> None:
        """The latest entry of an id wins: a sample is journaled again only when it was retried."""
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


def peek(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest entry per id, read without opening the journal for writing (a torn last line is skipped)."""
    entries: dict[str, dict[str, Any]] = {}
    path = Path(out_dir) / JOURNAL
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else ():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        entries[entry["id"]] = entry
    return entries


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomic: a temporary file renamed over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_outputs(out_dir: Path, rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[dict], list[dict]]:
    """curated.jsonl (converted records) and failed.jsonl (id, input index, stage, reasons) from
    (current input index, entry) pairs given in input order."""
    curated = [e["record"] for _, e in rows if e["status"] == "ok"]
    failed = [{"id": e["id"], "index": index, "stage": e["stage"], "reasons": e["reasons"],
               "retryable": e.get("retryable", False)} for index, e in rows if e["status"] != "ok"]
    write_jsonl(Path(out_dir) / CURATED, curated)
    write_jsonl(Path(out_dir) / FAILED, failed)
    return curated, failed
