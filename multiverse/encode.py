"""Trace text -> token ids, segment by segment, so that training ids equal what the engine forces.

Invariant: every path begins with exactly `fork_prefix_ids(label)` (the tokens the engine forces when it
forks), and every structure tag is one id; the rest of the text is encoded between tags.
"""
from __future__ import annotations

from typing import Any

from multiverse.structure import canonicalize
from multiverse.structure.lexer import lex
from multiverse.structure.parser import LABEL_RE
from multiverse.tags import TAGS, StructureVocab


def fork_prefix_ids(label: str, vocab: StructureVocab) -> list[int]:
    """The forced opening of a child branch: <Path> + LABEL + ":" (SPEC §5)."""
    return [vocab.tags.path_open] + vocab.encode(f"{label}:")


def encode_trace(text: str, tokenizer: Any, canonical: bool = True) -> list[int]:
    """Encode a trace (canonicalised first unless `canonical=False`). Raises StructureError if malformed."""
    return encode_trace_forced(text, tokenizer, canonical)[0]


def encode_trace_forced(text: str, tokenizer: Any, canonical: bool = True) -> tuple[list[int], list[bool]]:
    """(ids, forced): `forced[i]` is True where the engine places ids[i] itself (SPEC §5): each path's
    `<Path>` + LABEL + ":" and each `<Conclusion>` of a block. A path's label is unpredictable from what the path
    sees (every path of a block sees the same prefix at the same positions), so training may skip their loss."""
    vocab = StructureVocab.from_tokenizer(tokenizer)
    if canonical:
        text = canonicalize(text)
    tag_id = dict(zip(TAGS, vocab.tags.all()))
    ids: list[int] = []
    forced: list[bool] = []
    after_path_open = False
    for lx in lex(text):
        if lx.kind != "text":
            ids.append(tag_id[lx.show()])
            after_path_open = lx.kind == "open" and lx.value == "Path"
            forced.append(lx.kind == "open" and lx.value in ("Path", "Conclusion"))
            continue
        body = lx.value
        m = LABEL_RE.match(body) if after_path_open else None
        if m is not None:
            label = vocab.encode(f"{m.group(1)}:")
            ids += label
            forced += [True] * len(label)
            body = body[m.end() :]
        if body:
            text_ids = vocab.encode(body)
            ids += text_ids
            forced += [False] * len(text_ids)
        after_path_open = False
    return ids, forced

