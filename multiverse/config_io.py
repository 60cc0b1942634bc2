"""YAML configuration files -> frozen dataclasses, with `section.key=value` overrides (trainer and curator).

Every key must be a field of the target dataclass; an unknown key, a non-mapping section or a malformed override is
a ConfigError that names the key and the file. YAML lists become tuples where the field's default is a tuple.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import yaml

from multiverse.errors import UsageError


class ConfigError(UsageError, ValueError):
    """A configuration file or override that cannot be used; the message names the place. Exit status 2."""


def build(cls: type, values: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, recursing into nested dataclass fields."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out[name] = build(type(default), value or {}, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            out[name] = tuple(value)
        else:
            out[name] = value
    return cls(**out)


def apply_override(tree: dict[str, Any], item: str) -> None:
    """Set `section.key=value` (value parsed as YAML; empty means null) in a nested mapping."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def read_tree(path: str | Path | None, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], str]:
    """(mapping, where) from a YAML file (empty when path is None) with the overrides applied."""
    tree: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} does not exist") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    for item in overrides:
        apply_override(tree, item)
    return tree, where


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def get_dotted(cfg: Any, dotted: str) -> Any:
    """cfg.a.b for "a.b"."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
