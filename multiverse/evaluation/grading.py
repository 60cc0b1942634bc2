"""Grading: the text a grader reads (special tokens removed), the extracted answer, math equivalence.

The raw decode keeps special tokens (`<|im_end|>`, the structure tags); the graded text drops them. A structure
tag becomes a line break so that paths and outlines do not run together ("= 22</Path><Path>2:" must not read as
"= 222:"); every other special token is removed. Math answers are compared with math-verify; letters exactly.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from math_verify import parse, verify

from multiverse.evaluation.extraction import extract_letter, extract_math
from multiverse.evaluation.tasks import Problem
from multiverse.tags import TAGS

_FALLBACK_SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>")  # <|im_end|>, <|endoftext|>, <s>, </s>


def special_tokens(tokenizer: Any | None) -> tuple[str, ...]:
    """Every special token string of a tokenizer (its added special tokens included)."""
    if tokenizer is None:
        return ()
    found = set(getattr(tokenizer, "all_special_tokens", ()))
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            found.add(str(added.content if hasattr(added, "content") else added))
    return tuple(sorted(found, key=len, reverse=True))


def graded_text(raw: str, specials: Iterable[str] = ()) -> str:
    """`raw` without special tokens: tags -> "\\n", others -> "" (with no tokenizer, `<|...|>` forms are removed)."""
    text = raw
    for tag in TAGS:
        text = text.replace(tag, "\n")
    for token in specials:
        if token and token not in TAGS:
            text = text.replace(token, "")
    return _FALLBACK_SPECIAL.sub("", text)


@dataclass(frozen=True)
class Grade:
    correct: bool
    predicted: str | None
    method: str  # see extraction: boxed | answer_line | last_number | answer_phrase | bare_letter | ... | none


def grade(problem: Problem, text: str, truncated: bool = False) -> Grade:
    """Grade the graded text of one output (`truncated`: it hit a budget; no last-number guess then)."""
    if problem.kind == "choice":
        got = extract_letter(text)
        return Grade(got.answer == problem.answer.strip().upper(), got.answer, got.method)
    got = extract_math(text, word_problem=problem.kind == "word", truncated=truncated)
    if got.answer is None:
        return Grade(False, None, got.method)
    return Grade(equivalent(problem.answer, got.answer), got.answer, got.method)


def _normal(answer: str) -> str:
    s = answer.strip().replace("{,}", ",").replace("\\!", "").replace("\\,", "")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")  # 1,000 -> 1000 (a list "1, 000" keeps its space and stays a list)
    return s


def equivalent(gold: str, predicted: str) -> bool:
    """Mathematical equivalence through math-verify; plain string equality when either side does not parse."""
    g, p = _normal(gold), _normal(predicted)
    if g == p:
        return True
    parsed_gold, parsed_pred = parse(f"${g}$"), parse(f"${p}$")
    if not parsed_gold or not parsed_pred:
        return g.replace(" ", "") == p.replace(" ", "")
    return bool(verify(parsed_gold, parsed_pred))


def is_correct(problem: Problem, text: str) -> tuple[bool, str | None]:
    """(correct, extracted answer) of an output's text (special tokens are removed first)."""
    g = grade(problem, graded_text(text))
    return g.correct, g.predicted
