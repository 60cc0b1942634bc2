"""Reply text -> the JSON object asked for: extraction from prose or a code fence, then the JSON-schema check.

Models often wrap the object in a sentence or a ```json fence even when asked not to; the first JSON object
found in the text is taken (a fence's content first), so such a reply costs no attempt. Only a reply with no
parsable object, or one that breaks the schema, raises ReplyError (its reason goes back to the model).
"""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n(.*?)\n?```", re.DOTALL)


class ReplyError(Exception):
    """A reply that cannot be used; `reason` goes back to the model, `reply` is what it said."""

    def __init__(self, reason: str, reply: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply
        self.usage: Any = None  # the llm.Reply it came from, when there was one (its tokens still count)


def extract_json(text: str) -> Any:
    """The JSON value of the whole text, else of its first code fence, else the first `{...}` object in it.
    Raises json.JSONDecodeError (of the whole text) when none parses."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        first_error = err
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    for body in candidates:
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    raise first_error


def parse_json_reply(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON object in `text` (prose or a code fence around it is tolerated), checked against `schema`."""
    try:
        obj = extract_json(text)
    except json.JSONDecodeError as err:
        raise ReplyError(f"the reply is not valid JSON ({err.msg} at character {err.pos})", text) from err
    try:
        jsonschema.Draft202012Validator(schema).validate(obj)  # the schemas are ours: no check_schema per call
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "the top level"
        raise ReplyError(f"the JSON does not match the schema at {where}: {err.message}", text) from err
    return obj
