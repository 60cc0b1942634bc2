"""Complete checkpoints only: a marker written last vouches for a `checkpoint-N` folder, and resume trusts nothing else.

A save writes model, optimizer, scheduler, RNG states and trainer_state.json (the Trainer), then, after every
process has finished, the run fingerprint and LAST `multiverse_complete.json`, which lists every file of the folder
with its size. A folder is complete when the marker parses and every listed file exists with that size. A kill
during a save therefore leaves a folder without a valid marker, which `newest_complete` skips. Rotation keeps the
newest `keep` complete checkpoints and happens only after the marker is written, so there is always one to resume.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

MARKER = "multiverse_complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(folder: Path) -> int | None:
    m = _NAME.match(folder.name)
    return int(m.group(1)) if m and folder.is_dir() else None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """checkpoint-N folders of output_dir, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def mark_complete(folder: str | Path) -> None:
    folder = Path(folder)
    marker = folder / MARKER
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": step_of(folder), "files": _files(folder)}, indent=1))
    tmp.replace(marker)


def clear_mark(folder: str | Path) -> None:
    """Before a folder is written again, its old marker must not vouch for the half-written new content."""
    Path(folder, MARKER).unlink(missing_ok=True)


def problem(folder: str | Path) -> str | None:
    """None when the folder is a complete checkpoint, else what is wrong with it."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return f"no {MARKER} (the save did not finish)"
    try:
        listed = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{MARKER} is unreadable"
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when saved"
    return None


def newest_complete(output_dir: str | Path) -> tuple[Path | None, dict[str, str]]:
    """(newest complete checkpoint or None, {skipped newer folder: why})."""
    skipped: dict[str, str] = {}
    for folder in reversed(checkpoints(output_dir)):
        why = problem(folder)
        if why is None:
            return folder, skipped
        skipped[str(folder)] = why
    return None, skipped


def rotate(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete incomplete folders and all but the newest `keep` complete ones (None: keep all); returns deleted."""
    folders = checkpoints(output_dir)
    complete = [f for f in folders if problem(f) is None]
    doomed = [f for f in folders if f not in complete]
    if keep is not None and keep > 0:
        doomed += complete[:-keep]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed
