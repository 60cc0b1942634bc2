"""YAML configuration files -> frozen dataclasses, typed, with `section.key=value` overrides (trainer and curator).

Every value is coerced to and checked against its dataclass field's type at load time (pydantic, lax mode: the
string "1e-5" becomes the float 1e-5, "many" for an int is an error). Every error is a ConfigError naming where the
value came from: `FILE, line N` (from the YAML node marks) or `--set KEY=VALUE`; an unknown key comes with the
closest known one. `load(cls, path, overrides)` is the one entry point; `dump(cfg)` is the resolved YAML.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from pathlib import Path
from typing import Any, Sequence

import pydantic
import yaml

from multiverse.errors import UsageError

DEFAULTS = "defaults"


class ConfigError(UsageError, ValueError):
    """A configuration file or override that cannot be used; the message names the place. Exit status 2.

    `key` (dotted) lets `load` prefix the place of a value that fails a dataclass's own `validate()`.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class Places(dict):
    """dotted key -> where its value came from ("c.yaml, line 3" or "--set train.seed=1"); `base` otherwise."""

    def __init__(self, base: str = DEFAULTS) -> None:
        super().__init__()
        self.base = base

    def of(self, dotted: str) -> str:
        while dotted:  # a key without a mark of its own is placed at its section's
            if dotted in self:
                return self[dotted]
            dotted = dotted.rpartition(".")[0]
        return self.base


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(tp, config=pydantic.ConfigDict(coerce_numbers_to_str=True))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type, values: Any, where: str | Places, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, every value coerced to its field's type, recursively."""
    places = where if isinstance(where, Places) else Places(where)
    at = places.of(prefix.rstrip(".")) if prefix else places.base
    section = prefix.rstrip(".") or "the top level"
    if not isinstance(values, dict):
        raise ConfigError(f"{at}: {section}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        hints = [m for u in unknown for m in difflib.get_close_matches(str(u), fields, n=1)]
        suggest = f" (did you mean {', '.join(hints)}?)" if hints else ""
        names = ", ".join(map(str, unknown))
        at = places.of(prefix + str(unknown[0]))
        raise ConfigError(f"{at}: {section}: unknown key(s) {names}{suggest}; known: {', '.join(fields)}")
    types = _hints(cls)
    out: dict[str, Any] = {}
    for name, value in values.items():
        tp, dotted = types[name], prefix + name
        if dataclasses.is_dataclass(tp):
            out[name] = build(tp, {} if value is None else value, places, dotted + ".")
            continue
        try:
            out[name] = _adapter(tp).validate_python(value)
        except pydantic.ValidationError as e:
            why = e.errors()[0]["msg"]
            raise ConfigError(f"{places.of(dotted)}: {dotted} = {value!r}: {why[0].lower()}{why[1:]}") from None
    return cls(**out)


def apply_override(tree: dict[str, Any], item: str, places: Places | None = None) -> None:
    """Set `section.key=value` (value parsed as YAML; empty means null) in a nested mapping."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: not of the form section.key=value")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item}: the value is not valid YAML ({_one_line(e)})") from None
    if places is not None:
        for i in range(1, len(parts)):  # a section the override created is placed at the override too
            places.setdefault(".".join(parts[:i]), f"--set {item}")
        places[".".join(parts)] = f"--set {item}"


def _one_line(e: yaml.YAMLError) -> str:
    return " ".join(str(getattr(e, "problem", None) or e).split())


def _marks(node: yaml.Node, prefix: str, places: Places, file: str) -> None:
    """Record the line of every mapping key; a key given twice is an error (YAML would keep the last silently)."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{file}, line {line}: {prefix}{key} is given twice (first at line {seen[key]})")
        seen[key] = line
        places[prefix + key] = f"{file}, line {line}"
        _marks(value_node, f"{prefix}{key}.", places, file)


def read_yaml(path: str | Path) -> tuple[dict[str, Any], Places]:
    """(mapping, places) of one YAML file."""
    places = Places(str(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        tree = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({_one_line(e)})") from None
    if tree is None:
        return {}, places
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}, line 1: the top level must be a mapping of sections, got {type(tree).__name__}")
    _marks(node, "", places, str(path))
    return tree, places


def read_tree(path: str | Path | None, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Places]:
    """(mapping, places) from a YAML file (empty when path is None) with the overrides applied."""
    tree, places = read_yaml(path) if path is not None else ({}, Places())
    for item in overrides:
        apply_override(tree, item, places)
    return tree, places


def load(cls: type, path: str | Path | None, overrides: Sequence[str] = ()) -> Any:
    """Read, type, then `validate()` a config; an error from validate is placed at its key's origin."""
    tree, places = read_tree(path, overrides)
    cfg = build(cls, tree, places)
    try:
        return cfg.validate() if hasattr(cfg, "validate") else cfg
    except ConfigError as e:
        if e.key is None:
            raise
        raise ConfigError(f"{places.of(e.key)}: {e}", e.key) from None


def dump(cfg: Any) -> str:
    """The resolved configuration as YAML (tuples as lists), keys in field order."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return yaml.safe_dump(plain(dataclasses.asdict(cfg)), sort_keys=False, allow_unicode=True)


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}", key)


def check_at_least(cfg: Any, keys: Sequence[str], low: float) -> None:
    """Each dotted key of cfg is >= low."""
    for key in keys:
        if get_dotted(cfg, key) < low:
            raise ConfigError(f"{key} must be >= {low}, got {get_dotted(cfg, key)}", key)


def get_dotted(cfg: Any, dotted: str) -> Any:
    """cfg.a.b for "a.b"."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
