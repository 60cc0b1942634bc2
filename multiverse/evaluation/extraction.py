"""Where the answer is in a model's output (text already free of special tokens), and how it was found.

Math: the last `\\boxed{}` (or `\\fbox{}`) > the last `Answer:` line (`Final Answer:` too) > the last "the answer
is X" (as lighteval reads "the final answer is $X$. I hope it is correct.") > never on a truncated output, the last
"equals X" / "is equal to X" ("so x equals -3") > for word problems only, and never on a truncated output, the
last number of the text once parenthesised asides are dropped ("The answer is 5 (checked with 3 cases)." claims 5,
not 3); `1,000` is one thousand, `1, 000` two numbers. A phrase claims what follows it: a `$..$` or `\\(..\\)`
formula, a number, or a short expression up to the end of its sentence (prose after "is" claims nothing).
Multiple choice (A-D): boxed letter > `Answer: X` > "the answer is X" > the last line being just a letter
> the last standalone `(X)`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# method names recorded per sample
BOXED, ANSWER_LINE, LAST_NUMBER, ANSWER_PHRASE, EQUALS_PHRASE, BARE_LETTER, PAREN_LETTER, NONE = (
    "boxed", "answer_line", "last_number", "answer_phrase", "equals_phrase", "bare_letter", "paren_letter", "none",
)

_ANSWER_LINE = re.compile(r"(?im)(?:\*\*)?\b(?:final\s+)?answer(?:\*\*)?\s*[:：](?:\*\*)?[^\S\n]*(.*)$")
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\w])")
_PARENS = re.compile(r"\([^()]*\)")
_LETTER = r"\(?\s*([A-D])\s*\)?"
_ANSWER_IS = re.compile(r"(?i)\banswer\s+(?:is|would\s+be|should\s+be|will\s+be)\s*:?")
_EQUALS = re.compile(r"(?i)(?:\bequals|\bis\s+equal\s+to)(?=\s)")
_FORMULA = re.compile(r"\$\$?([^$]+)\$\$?|\\\((.+?)\\\)")
_LEAD_NUMBER = re.compile(r"\**(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)\**(?:[.,;:!?)]*(?:\s|$)|\s*\()")
_MAX_CLAIM = 40  # characters: a longer "answer is ..." is prose, not an answer


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    method: str


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} / \\fbox{...} (balanced braces; `\\boxed 5` too), or None."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        rest = text[m.end() :]
        if rest.startswith("{"):
            depth = 0
            for j, ch in enumerate(rest):
                depth += {"{": 1, "}": -1}.get(ch, 0)
                if depth == 0:
                    return rest[1:j].strip()
            continue  # unbalanced (a truncated box): look further back
        bare = re.match(r"\s+([^\s$]+)", rest)
        if bare:
            return bare.group(1).strip()
    return None


def answer_line(text: str) -> str | None:
    """What follows the last `Answer:` (or `Final Answer:`), on its line; wrappers ($, \\(, trailing .) removed."""
    found = [m.group(1) for m in _ANSWER_LINE.finditer(text) if m.group(1).strip()]
    return unwrap(found[-1]) if found else None


def unwrap(answer: str) -> str:
    s = answer.strip().rstrip(".").strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
        if len(s) > len(a) + len(b) and s.startswith(a) and s.endswith(b):
            s = s[len(a) : -len(b)].strip()
    return s.rstrip(".").strip()


def last_number(text: str) -> str | None:
    """The last number claimed in the text (asides in parentheses dropped), thousands separators removed."""
    flat = text
    while _PARENS.search(flat):
        flat = _PARENS.sub(" ", flat)
    found = _NUMBER.findall(flat)
    return found[-1].replace(",", "") if found else None


def claim(rest: str) -> str | None:
    """What a phrase such as "the answer is" claims, from the text that follows it (None: only prose follows)."""
    s = rest.strip()
    formula = _FORMULA.match(s)
    if formula:
        return (formula.group(1) or formula.group(2)).strip() or None
    number = _LEAD_NUMBER.match(s + " ")
    if number:
        return number.group(1).replace(",", "")
    sentence = re.split(r"\.(?:\s|$)|[;!?]", s, maxsplit=1)[0]
    sentence = re.sub(r"\s+\([^()]*\)\s*$", "", sentence)  # a trailing aside
    sentence = unwrap(sentence)
    return sentence if sentence and len(sentence) <= _MAX_CLAIM else None


def last_phrase(pattern: re.Pattern[str], text: str) -> str | None:
    """The claim of the last occurrence of `pattern` that claims something."""
    for m in reversed(list(pattern.finditer(text))):
        found = claim(text[m.end() :].split("\n", 1)[0])
        if found:
            return found
    return None


def extract_math(text: str, word_problem: bool = False, truncated: bool = False) -> Extraction:
    boxed = last_boxed(text)
    if boxed:
        return Extraction(boxed, BOXED)
    line = answer_line(text)
    if line:
        return Extraction(line, ANSWER_LINE)
    phrase = last_phrase(_ANSWER_IS, text)
    if phrase:
        return Extraction(phrase, ANSWER_PHRASE)
    if not truncated:
        equals = last_phrase(_EQUALS, text)
        if equals:
            return Extraction(equals, EQUALS_PHRASE)
    if word_problem and not truncated:
        number = last_number(text)
        if number is not None:
            return Extraction(number, LAST_NUMBER)
    return Extraction(None, NONE)


def extract_letter(text: str) -> Extraction:
    boxed = last_boxed(text)
    if boxed:
        m = re.fullmatch(r"\s*(?:\\text\{\s*)?" + _LETTER + r"\s*\}?\s*\.?\s*", boxed) or re.match(_LETTER + r"\b", boxed)
        if m:
            return Extraction(m.group(1), BOXED)
    line = answer_line(text)
    if line:
        m = re.match(_LETTER + r"(?![A-Za-z])", line)
        if m:
            return Extraction(m.group(1), ANSWER_LINE)
    phrases = re.findall(r"(?i:answer|option|choice)\s+(?i:is|would be|:)\s*:?\s*\**" + _LETTER + r"(?![A-Za-z])", text)
    if phrases:
        return Extraction(phrases[-1], ANSWER_PHRASE)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        m = re.fullmatch(r"\**" + _LETTER + r"\.?\**", lines[-1])
        if m:
            return Extraction(m.group(1), BARE_LETTER)
    parens = re.findall(r"\(([A-D])\)", text)
    if parens:
        return Extraction(parens[-1], PAREN_LETTER)
    return Extraction(None, NONE)
