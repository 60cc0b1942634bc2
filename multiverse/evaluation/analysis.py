"""Structure and SPEC §7 counts of a returned text, through the core (for backends that return only text).

The text is encoded segment by segment (`encode_trace`: tags as single ids, each path's `LABEL:` as the engine
forces it), then counted with `multiverse.attention.count_tokens`, the definition the engine itself uses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from multiverse.attention.counts import TokenCounts, count_tokens
from multiverse.encode import encode_trace
from multiverse.structure import StructureError, parse
from multiverse.structure.parser import LABEL_RE
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


_TAG = re.compile("|".join(re.escape(t) for t in TAGS))


def closing_suffix(text: str) -> str:
    """Tags that finish a structure a budget cut short, without judging it: an open outline, goal, path or
    conclusion is closed, outlines without their paths get empty ones ("<Path>K:</Path>"), an open block gets
    its conclusion and `</Parallel>`, an open `<Think>` its `</Think>` (a goal with no outline gets one, a label
    cut before its ":" gets it)."""
    stack: list[list] = []  # frames: ["think"] | ["path"] | ["block", phase, outline labels, paths written, outline start]
    for m in _TAG.finditer(text):
        tag = m.group(0)
        top = stack[-1] if stack else None
        if tag in ("<Think>", "<Path>"):
            stack.append([tag[1:-1].lower()])
            if tag == "<Path>" and len(stack) > 1 and stack[-2][0] == "block":
                stack[-2][1], stack[-2][3] = "paths", stack[-2][3] + 1
        elif tag == "<Parallel>":
            stack.append(["block", "opened", [], 0, 0])
        elif tag == "<Goal>" and top and top[0] == "block":
            top[1] = "goal"
        elif tag == "<Outline>" and top and top[0] == "block":
            top[1], top[4] = "outline", m.end()
            label = LABEL_RE.match(text[m.end() : m.end() + 20])
            top[2].append(label.group(1) if label else str(len(top[2]) + 1))
        elif tag == "</Outline>" and top and top[0] == "block":
            top[1] = "goal"
        elif tag == "</Goal>" and top and top[0] == "block":
            top[1] = "paths"
        elif tag == "<Conclusion>" and top and top[0] == "block":
            top[1] = "conclusion"
        elif tag == "</Conclusion>" and top and top[0] == "block":
            top[1] = "closed"
        elif tag in ("</Path>", "</Think>", "</Parallel>") and stack:
            stack.pop()
    out = []
    for frame in reversed(stack):
        if frame[0] != "block":
            out.append(f"</{frame[0].capitalize()}>")
            continue
        _, phase, labels, written, start = frame
        if phase == "opened":
            out.append("<Goal>")
        if phase == "outline":
            cut = text[start:]
            out.append(("" if LABEL_RE.match(cut) else ":" if cut.strip() else f"{labels[-1]}:") + "</Outline>")
        if phase in ("opened", "goal", "outline"):
            if not labels:
                out.append("<Outline>1: x</Outline>")
                labels = ["1"]
            out.append("</Goal>")
        if phase in ("opened", "goal", "outline", "paths"):
            out += [f"<Path>{label}:</Path>" for label in labels[written:]]
            out.append("<Conclusion>")
        if phase != "closed":
            out.append("</Conclusion>")
        out.append("</Parallel>")
    return "".join(out)


def prefix_validity(raw_text: str, specials: tuple[str, ...] = ()) -> Validity:
    """`validity` of the text with what a budget left open closed (`closing_suffix`): a structure cut short
    is valid when it is the beginning of a valid one."""
    return validity(raw_text + closing_suffix(raw_text), specials)


def continuation_validity(prompt_text: str, raw_text: str, specials: tuple[str, ...] = ()) -> Validity:
    """`prefix_validity` of a generation that may continue a structure its prompt opened ("<Parallel><Goal>"):
    judged with the prompt when the prompt is a valid beginning that leaves something open, else alone (a
    prompt with stray tags opens nothing the generation could continue)."""
    if closing_suffix(prompt_text) and prefix_validity(prompt_text, specials).valid:
        return prefix_validity(prompt_text + raw_text, specials)
    return prefix_validity(raw_text, specials)
