"""JSON schemas of the structured replies, one per LLM stage (sent as response_format and checked locally)."""
from __future__ import annotations

from typing import Any

_SPAN: dict[str, Any] = {
    "type": "object",
    "required": ["summary", "first", "last"],
    "properties": {
        "summary": {"type": "string", "minLength": 1},
        "first": {"type": "integer", "minimum": 1},
        "last": {"type": "integer", "minimum": 1},
    },
}

STEPS: dict[str, Any] = {
    "type": "object",
    "required": ["steps"],
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["summary", "first", "last"],
                "properties": {
                    **_SPAN["properties"],
                    "substeps": {"type": "array", "items": _SPAN},
                },
            },
        }
    },
}

DEPENDENCIES: dict[str, Any] = {
    "type": "object",
    "required": ["dependencies"],
    "properties": {
        "dependencies": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["step", "needs"],
                "properties": {
                    "step": {"type": "string", "minLength": 1},
                    "needs": {"type": "array", "items": {"type": "string", "minLength": 1}},
                },
            },
        }
    },
}

REWRITE: dict[str, Any] = {
    "type": "object",
    "required": ["outlines", "conclusion", "rewrites"],
    "properties": {
        "goal": {"type": "string"},
        "outlines": {"type": "array", "minItems": 2, "items": {"type": "string", "minLength": 1}},
        "conclusion": {"type": "string", "minLength": 1},
        "rewrites": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sentence", "text"],
                "properties": {
                    "sentence": {"type": "integer", "minimum": 1},
                    "text": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}

BY_STAGE: dict[str, dict[str, Any]] = {"steps": STEPS, "dependencies": DEPENDENCIES, "rewrite": REWRITE}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as sent with `"strict": true`: every object closed (additionalProperties false) and every
    property required, as OpenAI's strict structured outputs demand. Replies are still checked locally
    against the lenient schema, so a model that omits an optional field in json_object mode is not rejected."""
    out = dict(schema)
    if out.get("type") == "object":
        out["properties"] = {k: strict(v) for k, v in out.get("properties", {}).items()}
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    return out


def version() -> str:
    """A short hash of the three schemas: part of the run's fingerprint."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(BY_STAGE, sort_keys=True).encode()).hexdigest()[:12]
