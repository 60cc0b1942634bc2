"""On-disk response cache: one JSON file per (model, messages, parameters, attempt) key.

Writes are atomic (temporary file + os.replace), so a process killed mid-write leaves either the old state
or the full entry, never a torn one; a torn or foreign file is treated as a miss. Only successful replies are
stored, so transport failures are never replayed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any], attempt: int) -> str:
    """A stable hash of everything that determines a reply (attempt: regenerations get fresh samples)."""
    material = json.dumps(
        {"model": model, "messages": messages, "params": params, "attempt": attempt},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResponseCache:
    """Reply text by key under `root/<first two hex digits>/<key>.json`; `enabled=False` stores nothing."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """{"reply": text, "usage": [prompt_tokens, completion_tokens]} (usage absent in older entries)."""
        if not self.enabled:
            return None
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("reply"), str):
            return None
        return entry

    def put(self, key: str, reply: str, usage: tuple[int, int] = (0, 0)) -> None:
        if not self.enabled:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "reply": reply, "usage": list(usage)}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
