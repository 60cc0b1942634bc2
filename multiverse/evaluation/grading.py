"""Answer extraction and grading (math equivalence through math-verify; letters for multiple choice)."""
from __future__ import annotations

import re

from math_verify import parse, verify

from multiverse.evaluation.tasks import Problem


def _boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer: the last \\boxed{}, else what follows the last "Answer:", else the last number."""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    at = text.rfind("Answer:")
    if at >= 0:
        tail = text[at + len("Answer:") :].strip()
        if tail:
            return tail.splitlines()[0].strip().rstrip(".")
    numbers = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", text)
    return numbers[-1] if numbers else None


def extract_choice(text: str) -> str | None:
    """A letter A-D: from \\boxed{}, "Answer: (X)", or the last standalone (X)."""
    for candidate in (_boxed(text), _after_answer(text)):
        if candidate:
            m = re.search(r"\b([A-D])\b", candidate)
            if m:
                return m.group(1)
    found = re.findall(r"\(([A-D])\)", text)
    return found[-1] if found else None


def _after_answer(text: str) -> str | None:
    at = text.rfind("Answer:")
    return text[at + len("Answer:") :][:40] if at >= 0 else None


def is_correct(problem: Problem, text: str) -> tuple[bool, str | None]:
    """(correct, extracted answer) for a model's full output text."""
    if problem.kind == "choice":
        letter = extract_choice(text)
        return letter == problem.answer, letter
    predicted = extract_answer(text)
    if predicted is None:
        return False, None
    gold = parse(f"${problem.answer}$")
    guess = parse(f"${predicted}$")
    if not gold or not guess:
        return predicted.strip() == problem.answer.strip(), predicted
    return bool(verify(gold, guess)), predicted
