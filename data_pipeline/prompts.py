"""Prompt templates: one YAML file per LLM stage, editable and versioned by the user.

A file holds `system`, `user` and `retry` strings with `{{name}}` placeholders. `version` is the first 12
hex digits of the file's SHA-256, recorded in every output row's provenance, so a data set says exactly
which prompts made it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from data_pipeline.config import ConfigError

STAGES: tuple[str, ...] = ("steps", "dependencies", "rewrite")
BUILTIN_DIR = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


@dataclass(frozen=True)
class Prompt:
    stage: str
    system: str
    user: str
    retry: str
    version: str
    source: str

    def messages(self, **values: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self._fill(self.system, values, "system")},
            {"role": "user", "content": self._fill(self.user, values, "user")},
        ]

    def retry_turns(self, reply: str, reason: str) -> list[dict[str, str]]:
        """The two turns appended when a reply is rejected: what the model said, then why it was rejected."""
        return [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": self._fill(self.retry, {"reason": reason}, "retry")},
        ]

    def _fill(self, template: str, values: dict[str, str], part: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in values:
                raise ConfigError(f"{self.source}: `{part}` uses {{{{{m.group(1)}}}}}, which stage {self.stage} "
                                  f"does not provide (it provides: {', '.join(sorted(values))})")
            return values[m.group(1)]

        return _PLACEHOLDER.sub(sub, template)


def load_prompt(stage: str, folder: str | Path | None = None) -> Prompt:
    """The prompt of `stage` from `folder` (a user's copy) or the built-in folder."""
    path = Path(folder or BUILTIN_DIR) / f"{stage}.yaml"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"prompt file {path} cannot be read: {err.strerror}") from err
    try:
        tree = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"prompt file {path} is not valid YAML: {err}") from err
    if not isinstance(tree, dict):
        raise ConfigError(f"prompt file {path}: expected a mapping with system, user and retry")
    for key in ("system", "user", "retry"):
        if not isinstance(tree.get(key), str) or not tree[key].strip():
            raise ConfigError(f"prompt file {path}: `{key}` must be a non-empty string")
    version = hashlib.sha256(raw).hexdigest()[:12]
    return Prompt(stage, tree["system"], tree["user"], tree["retry"], version, str(path))


def load_prompts(folder: str | Path | None = None) -> dict[str, Prompt]:
    return {stage: load_prompt(stage, folder) for stage in STAGES}
