"""Structure and SPEC §7 counts of a returned text, through the core (for backends that return only text).

The text is encoded segment by segment (`encode_trace`: tags as single ids, each path's `LABEL:` as the engine
forces it), then counted with `multiverse.attention.count_tokens`, the definition the engine itself uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multiverse.attention.counts import TokenCounts, count_tokens
from multiverse.encode import encode_trace
from multiverse.structure import StructureError, parse
from multiverse.tags import TAGS


def counts_from_text(raw_text: str, tokenizer: Any) -> TokenCounts:
    """Counts of a generation from its raw text (special tokens kept), as if the engine had produced it."""
    return count_tokens(encode_trace(raw_text, tokenizer, canonical=False), tokenizer)


@dataclass(frozen=True)
class Validity:
    valid: bool  # the structure follows the grammar (text without blocks is valid)
    blocks: int
    error: str | None


def validity(raw_text: str, specials: tuple[str, ...] = ()) -> Validity:
    """Grammar check of the structure tags (other special tokens, e.g. <|im_end|>, removed first)."""
    text = raw_text
    for token in specials:
        if token not in TAGS:
            text = text.replace(token, "")
    try:
        doc = parse(text)
    except StructureError as err:
        return Validity(False, raw_text.count("<Parallel>"), str(err))
    return Validity(True, len(list(doc.blocks())), None)
