"""Structure tags a server stripped: a Multiverse model's outputs read as sequential text when they are gone.

vLLM and SGLang skip special tokens when they detokenize unless a request says `skip_special_tokens: false`; the
structure tags are special tokens, so a server that skips them returns the paths' text run together: no fork is
seen, the degree of parallelism reads 1.0 and the critical path is the whole text. Nothing fails, so it is
looked for: when the model is a Multiverse model (its training record says so, or its tokenizer holds the tags)
and the requests let the server skip special tokens, or when none of its outputs holds a tag, or when the
server's own report of the tree shows forks its text does not.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from multiverse.tags import TAGS

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json")


def is_multiverse_model(path: str | None) -> bool:
    """A model trained to fork: its multiverse_run.json says mode multiverse; without one, its tokenizer has the tags."""
    if not path or not os.path.isdir(path):
        return False
    run = os.path.join(path, "multiverse_run.json")
    if os.path.isfile(run):
        with open(run, encoding="utf-8") as f:
            return json.load(f).get("mode") == "multiverse"
    for name in TOKENIZER_FILES:
        full = os.path.join(path, name)
        if os.path.isfile(full):
            with open(full, encoding="utf-8") as f:
                if '"<Parallel>"' in f.read():
                    return True
    return False


def skips_special_tokens(extra: dict[str, Any] | None) -> bool:
    """Whether requests with this extra body let a server skip special tokens (servers default to skipping)."""
    return (extra or {}).get("skip_special_tokens", True) is not False


def stripped_tags(records: Sequence[dict[str, Any]], model: str, extra: dict[str, Any] | None) -> list[str]:
    """Warnings for the records a server returned for `model` (empty when nothing looks stripped)."""
    if not records or not is_multiverse_model(model):
        return []
    out = []
    name = os.path.basename(os.path.normpath(model))
    if skips_special_tokens(extra):
        out.append(f"{name} is a Multiverse model but the requests let the server skip special tokens "
                   "(skip_special_tokens is not false in --request-extra): the structure tags are stripped")
    tagged = sum(any(tag in r["raw_text"] for tag in TAGS) for r in records)
    forked_by_server = sum(any((b.get("depth") or 0) > 0 for b in r.get("tree") or []) for r in records)
    hidden = sum(
        any((b.get("depth") or 0) > 0 for b in r.get("tree") or []) and not any(tag in r["raw_text"] for tag in TAGS)
        for r in records
    )
    if hidden:
        out.append(f"the server reports forks in {hidden} of {forked_by_server} forked outputs whose text holds no "
                   "structure tag: it strips them (send skip_special_tokens false)")
    elif tagged == 0:
        out.append(f"none of the {len(records)} outputs holds a structure tag although {name} is a Multiverse model: "
                   "a server that skips special tokens (vLLM and SGLang do by default) strips them, and every output "
                   "then reads as sequential (parallelism 1.0); check that it keeps special tokens "
                   '(--request-extra \'{"skip_special_tokens": false}\')')
    return out
