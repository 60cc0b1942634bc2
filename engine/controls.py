"""Decoding controls borrowed from parallel decoders (Fast-dLLM, arXiv 2505.22618; dParallel, arXiv 2509.26488):
the names, their checks and how they are recorded. Each is a per-request field of `SamplingParams`.

| field | off | meaning |
|---|---|---|
| `fork_threshold` | None | a drawn `<Parallel>` is kept only when its probability is >= tau, else it is masked and re-drawn |
| `fork_bias` | 0.0 | added to the `<Parallel>` logit before drawing (models that under-fork) |
| `max_concurrent_paths` | None | at most k paths of one block decode at once; the rest start as earlier ones close |
| `path_rule`, `path_factor` | None | "factor": the n most confident outlines with (n+1)(1-c(n)) < f run at once |
| `structure` | "free" | "constrained": tokens that would break the structure are masked (engine/structure_mask.py) |
| `merge` | "reuse" | "refresh": the joined paths are re-encoded causally before `<Conclusion>` (engine/refresh.py) |

`max_concurrent_paths` and `path_rule` are exact (same tokens as without them, SPEC §5's KV unchanged);
the others change what is decoded, so every one is off unless asked for.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

STRUCTURES = ("free", "constrained")
MERGES = ("reuse", "refresh")
PATH_RULES = ("factor",)
NAMES = ("fork_threshold", "fork_bias", "max_concurrent_paths", "path_rule", "path_factor", "structure", "merge")
DEFAULTS: dict[str, Any] = {"fork_threshold": None, "fork_bias": 0.0, "max_concurrent_paths": None, "path_rule": None,
                            "path_factor": None, "structure": "free", "merge": "reuse"}


class ControlError(ValueError):
    """A decoding control with a bad value; the message names the field and the value."""


def check(values: dict[str, Any]) -> dict[str, Any]:
    """The controls checked and normalised (floats as float); raises TypeError/ValueError naming the field."""
    out = dict(values)
    tau = values["fork_threshold"]
    if tau is not None:
        out["fork_threshold"] = real("fork_threshold", tau, lambda x: 0 <= x <= 1, "in [0, 1] or None")
    out["fork_bias"] = real("fork_bias", values["fork_bias"], lambda x: True, "finite")
    k = values["max_concurrent_paths"]
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
        raise _error("max_concurrent_paths", k, "must be an integer or None", TypeError)
    if k is not None and not 1 <= k <= 2**31 - 1:
        raise _error("max_concurrent_paths", k, "must be >= 1")
    rule, f = values["path_rule"], values["path_factor"]
    if rule is not None and rule not in PATH_RULES:
        raise _error("path_rule", rule, f"must be one of {PATH_RULES} or None")
    if rule is None and f is not None:
        raise _error("path_factor", f, "needs path_rule='factor'")
    if rule == "factor":
        if f is None:
            raise _error("path_factor", f, "must be given with path_rule='factor' (e.g. 1.0)")
        out["path_factor"] = real("path_factor", f, lambda x: x > 0, "> 0")
    for name, choices in (("structure", STRUCTURES), ("merge", MERGES)):
        if values[name] not in choices:
            raise _error(name, values[name], f"must be one of {', '.join(repr(c) for c in choices)}")
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """"fork_threshold=0.9" -> ("fork_threshold", 0.9) (flags and sweeps); the value is typed by the field."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in NAMES:
        raise ControlError(f"{text!r}: expected NAME=VALUE with NAME one of {', '.join(NAMES)}")
    return name, parse_value(name, raw.strip())


def parse_value(name: str, raw: str) -> Any:
    if raw.lower() in ("none", "off", ""):
        return None if DEFAULTS[name] is None else DEFAULTS[name]
    try:
        if name == "max_concurrent_paths":
            return int(raw)
        if name in ("fork_threshold", "fork_bias", "path_factor"):
            return float(raw)
    except ValueError as err:
        raise ControlError(f"{name}={raw}: not a number") from err
    return raw


def recorded(params: Any) -> dict[str, Any]:
    """The controls of a SamplingParams as they go into eval records and summaries."""
    return {name: getattr(params, name) for name in NAMES}


def _error(name: str, value: Any, rule: str, kind: type[Exception] = ControlError) -> Exception:
    return kind(f"SamplingParams.{name} {rule}, got {value!r}")


def real(name: str, value: Any, ok: Any, rule: str, kind: type[Exception] = ControlError) -> float:
    """float(value) when it is a finite real number with ok(x); else TypeError, or `kind` saying it must be `rule`."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _error(name, value, "must be a number", TypeError)
    x = float(value)
    if not math.isfinite(x) or not ok(x):
        raise _error(name, value, f"must be {rule}", kind)
    return x


# ---------------------------------------------------------------------- command-line flags (generate, eval)
def add_arguments(parser: Any) -> None:
    """The controls as flags (argparse), shared by `multiverse generate` and `multiverse eval`."""
    g = parser.add_argument_group("decoding controls (engine/controls.py; all off by default)")
    g.add_argument("--fork-threshold", type=float, help="keep a drawn <Parallel> only when its probability is >= this")
    g.add_argument("--fork-bias", type=float, default=0.0, help="added to the <Parallel> logit")
    g.add_argument("--max-concurrent-paths", type=int, help="paths of a block decoding at once (exact: same tokens)")
    g.add_argument("--path-rule", choices=PATH_RULES, help="factor: concurrency from the outlines' confidences (exact)")
    g.add_argument("--path-factor", type=float, help="f of --path-rule factor: (n+1)(1-c(n)) < f")
    g.add_argument("--structure", choices=STRUCTURES, default="free", help="constrained: mask tokens that break the structure")
    g.add_argument("--merge", choices=MERGES, default="reuse", help="refresh: re-encode the joined paths before <Conclusion>")


def from_arguments(args: Any) -> dict[str, Any]:
    """The flags' values, checked (a ControlError/TypeError names the field; callers turn it into a usage error)."""
    return check({name: getattr(args, name) for name in NAMES})
