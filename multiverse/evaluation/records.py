"""Per-sample records: one JSON line per (task, id, sample), appended, flushed and fsynced as it completes.

A run killed at any point (SIGKILL included) leaves whole lines plus at most one torn last line; `RecordFile`
drops that torn tail when it reopens, so `--resume` continues exactly where the kill struck. Seeds depend only
on (base seed, task, id, sample index): adding tasks, reordering them or resuming changes no seed.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

Key = tuple[str, str, int]

# Fields that differ between two identical runs (timings): left out when runs are compared.
TIMING_FIELDS = ("wall_s", "tokens_per_s")


def sample_seed(base_seed: int, task: str, problem_id: str, sample: int) -> int:
    """A stable 62-bit seed: sha256 of the key (never Python's salted hash)."""
    digest = hashlib.sha256(f"{base_seed}\x00{task}\x00{problem_id}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def key_of(record: dict[str, Any]) -> Key:
    return record["task"], record["id"], int(record["sample"])


class RecordFile:
    """Append-only JSONL of finished samples; `done` holds the keys already on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.records: list[dict[str, Any]] = self._load()
        self.done: set[Key] = {key_of(r) for r in self.records}

    def _load(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            data = f.read()
        good = data[: data.rfind(b"\n") + 1]  # whole lines only: a kill mid-write leaves a torn tail
        if len(good) != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(len(good))
        records = []
        for n, line in enumerate(good.decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.path}:{n}: not a record ({err.msg}); remove the line to resume") from err
        return records

    def append(self, record: dict[str, Any]) -> None:
        key = key_of(record)
        if key in self.done:
            raise ValueError(f"record {key} is already in {self.path}")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self.done.add(key)


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its timings: equal for two runs that generated the same thing."""
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}
