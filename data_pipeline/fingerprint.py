"""The run's fingerprint: every setting that can change an output row, stored in `<output.dir>/run.json`.

A resume compares the stored settings with the current ones. Any difference (model, sampling, structured
output mode, prompts, schemas, checks and their thresholds, grouping, attempts, input columns, wrapping) is a
ConfigError naming each changed key, unless the run is told to restart: then the old journal, outputs and
report move to `<output.dir>/replaced-N/` and a new run starts (the reply cache stays: its keys already hold
the model, the messages and the sampling parameters). So one folder's rows and report never mix settings.
Not in the fingerprint: the endpoint URL and key, timeouts, concurrency, retries, rate limits, the selection
(offset, limit, shard) and the statistics tokenizer, none of which changes a row.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from data_pipeline import schemas
from data_pipeline.config import ConfigError, CurateConfig, LLMConfig
from data_pipeline.prompts import Prompt

RUN_FILE = "run.json"
_MOVED = ("journal.jsonl", "curated.jsonl", "failed.jsonl", "report.json", "distance_histogram.png", RUN_FILE)


def settings(cfg: CurateConfig, llm: LLMConfig, prompts: dict[str, Prompt]) -> dict[str, Any]:
    """The settings that shape a row, as flat dotted keys (JSON values)."""
    out: dict[str, Any] = {
        "llm.model": llm.model, "llm.temperature": llm.temperature, "llm.top_p": llm.top_p,
        "llm.max_tokens": llm.max_tokens, "llm.seed": llm.seed, "llm.structured_output": llm.structured_output,
        "llm.extra_body": llm.extra_body, "run.max_attempts": cfg.run.max_attempts,
        "output.wrap_think": cfg.output.wrap_think, "schemas": schemas.version(),
    }
    for key in ("id_field", "question_field", "trace_field"):
        out[f"input.{key}"] = getattr(cfg.input, key)
    for section in ("checks", "grouping"):
        for key, value in dataclasses.asdict(getattr(cfg, section)).items():
            out[f"{section}.{key}"] = value
    out |= {f"prompts.{stage}": p.version for stage, p in sorted(prompts.items())}
    return json.loads(json.dumps(out))  # tuples -> lists, as they come back from the file


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every key that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def check_or_restart(out_dir: Path, current: dict[str, Any], restart: bool) -> str | None:
    """Record `current` in run.json; raise when the folder holds a run with other settings. With `restart`,
    any earlier run is archived first (changed settings or not). Returns the archive folder, if one was made.
    A folder without run.json (made before fingerprints existed) adopts the current settings."""
    path = Path(out_dir) / RUN_FILE
    if path.exists() and not restart:
        old = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
        diff = changed(old, current)
        if diff:
            raise ConfigError(
                f"{out_dir} holds a run made with other settings ({'; '.join(diff)}). Resuming would mix rows "
                "of both; rerun with --restart to move the old run to replaced-N/ and start anew, or choose "
                "another output.dir")
    archived = None
    if restart and (Path(out_dir) / "journal.jsonl").exists():
        archived = _archive(Path(out_dir))
    body = {"fingerprint": digest(current), "settings": current}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return archived


def _archive(out_dir: Path) -> str:
    n = 1
    while (out_dir / f"replaced-{n}").exists():
        n += 1
    target = out_dir / f"replaced-{n}"
    target.mkdir()
    for name in _MOVED:
        if (out_dir / name).exists():
            os.replace(out_dir / name, target / name)
    return str(target)
