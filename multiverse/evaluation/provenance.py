"""What a result was produced with: package versions, the model's path and content hash, the resolved config."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = ("multiverse", "torch", "transformers", "tokenizers", "math-verify", "openai", "datasets", "numpy")
FULL_HASH_LIMIT = 512 * 2**20  # weights up to this size are hashed whole; larger ones by size + first/last MiB


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_fingerprint(path: str | None) -> dict[str, Any]:
    """{"path", "sha256", "how"} of a local model directory (hub ids and URLs: the name only)."""
    if path is None or not os.path.isdir(path):
        return {"path": path, "sha256": None, "how": "not a local directory"}
    files = sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    total = sum(os.path.getsize(os.path.join(path, f)) for f in files)
    digest = hashlib.sha256()
    for name in files:
        full = os.path.join(path, name)
        digest.update(name.encode() + b"\0" + str(os.path.getsize(full)).encode() + b"\0")
        with open(full, "rb") as f:
            if total <= FULL_HASH_LIMIT:
                for chunk in iter(lambda: f.read(2**20), b""):
                    digest.update(chunk)
            else:
                digest.update(f.read(2**20))
                f.seek(max(0, os.path.getsize(full) - 2**20))
                digest.update(f.read())
    how = "every file" if total <= FULL_HASH_LIMIT else "names, sizes, first and last MiB of every file"
    return {"path": os.path.abspath(path), "sha256": digest.hexdigest(), "how": how, "bytes": total}


def write_json(path: str, obj: Any) -> None:
    """Written to a temporary file and renamed: a kill never leaves half a summary."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def problems_sha256(problems: list[Any]) -> str:
    """A hash of exactly what was asked and graded: each problem's (id, question, answer, kind), in order."""
    rows = [[p.id, p.question, p.answer, p.kind] for p in problems]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def hub_revision(repo: str) -> str | None:
    """The commit of a hub data set as cached here (`refs/main` of its hub cache folder); None when not cached."""
    from huggingface_hub import constants

    ref = os.path.join(constants.HF_HUB_CACHE, f"datasets--{repo.replace('/', '--')}", "refs", "main")
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            return f.read().strip() or None
    return None


def harness_commit() -> dict[str, Any]:
    """The git commit of the multiverse checkout that ran (and whether it had uncommitted changes)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None, "note": "git not available"}
    if head.returncode != 0:
        return {"commit": None, "dirty": None, "note": "not a git checkout (an installed package)"}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def write_text(path: str, text: str) -> None:
    """Written to a temporary file and renamed, like write_json."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
