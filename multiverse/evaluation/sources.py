"""The problems of a run and where they came from, loaded before anything is written.

`check_reachable` runs with the flag checks: a task that needs the hub while the hub is off (HF_HUB_OFFLINE=1 or
HF_DATASETS_OFFLINE=1) and is not in the local caches is refused at once, naming the task, the data set and the
way out. `load_problems` then reads every task (a hub failure becomes one clear error) and returns, per task, its
provenance for summary.json: the file and its sha256, or the hub data set and the revision cached here, and the
sha256 of exactly the problems asked.
"""
from __future__ import annotations

import os
from typing import Any

from multiverse.errors import CommandError, UsageError
from multiverse.evaluation.tasks import TASKS, Problem, is_file_task, load_file, load_task, local_file, task_name

TRUE = ("1", "on", "yes", "true")


def hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def in_cache(repo: str) -> bool:
    """Whether a hub data set has been downloaded here (the hub cache, or a datasets cache that built it)."""
    from huggingface_hub import constants

    hub = os.path.join(constants.HF_HUB_CACHE, f"datasets--{repo.replace('/', '--')}")
    home = os.environ.get("HF_DATASETS_CACHE") or os.path.join(constants.HF_HOME, "datasets")
    built = os.path.join(home, repo.replace("/", "___"))
    return os.path.isdir(os.path.join(hub, "snapshots")) or os.path.isdir(built)


def check_reachable(specs: list[str], data_dir: str | None) -> None:
    """Refuse, before any output exists, a hub task that cannot be read: offline and not cached."""
    if not hub_offline():
        return
    for spec in specs:
        if is_file_task(spec) or TASKS[spec].hub is None or local_file(spec, data_dir) is not None:
            continue
        hub = TASKS[spec].hub
        if not in_cache(hub):
            where = f"--data-dir {data_dir} has no {TASKS[spec].local}" if data_dir else "no --data-dir was given"
            raise UsageError(f"--tasks {spec}: needs the hub data set {hub}, but the hub is off (HF_HUB_OFFLINE=1) and "
                             f"{hub} is not in the cache, and {where}; put {TASKS[spec].local} in a --data-dir, "
                             "or download it once with the hub on")


def load_problems(s: dict[str, Any]) -> tuple[list[tuple[str, Problem]], dict[str, dict[str, Any]]]:
    """Every (task, problem) of the run and each task's provenance; a hub error names the task and the data set."""
    problems: list[tuple[str, Problem]] = []
    provenance: dict[str, dict[str, Any]] = {}
    for spec in s["tasks"]:
        name = task_name(spec)
        if is_file_task(spec):
            found = load_file(spec, s["field"] or {"question": "question", "answer": "answer"}, s["task_kind"], s["limit"])
        else:
            try:
                found = load_task(spec, data_dir=s["data_dir"], limit=s["limit"])
            except (UsageError, CommandError):
                raise
            except Exception as err:  # noqa: BLE001 - the hub and datasets raise many kinds (gated, offline, 404)
                raise CommandError(f"--tasks {spec}: could not load {TASKS[spec].hub} from the hub "
                                   f"({type(err).__name__}: {err}); give a local copy with --data-dir") from err
        provenance[name] = source_of(spec, s["data_dir"], found)
        problems += [(name, p) for p in found]
    return problems, provenance


def source_of(spec: str, data_dir: str | None, found: list[Problem]) -> dict[str, Any]:
    from multiverse.evaluation.provenance import hub_revision, problems_sha256, sha256_file

    common = {"problems": len(found), "problems_sha256": problems_sha256(found)}
    path = spec if is_file_task(spec) else local_file(spec, data_dir)
    if path is not None:
        return {"source": "file", "path": os.path.abspath(path), "sha256": sha256_file(path), **common}
    task = TASKS[spec]
    if task.hub is None:
        return {"source": "generated", "generator": "multiverse.demo.remainders.held_out_rows", **common}
    return {"source": "hub", "dataset": task.hub, "config": task.hub_config, "split": task.split,
            "revision": hub_revision(task.hub), **common}
