"""A step check for the remainders task: is a completion's reasoning true, not only its final answer?

The evaluation's grader reads the final answer alone, so a completion that subtracts the wrong divisor and lands
on the right number by luck passes it. Learning from the model's own completions (self-distillation, RL) must not
keep such a trace. `steps_problem(question, text)` reads the question alone (not the generator) and says what is
wrong with the text, or "" when:

- every subtraction chain `a-d=b-d=c...` is true arithmetic, with one of the question's divisors, and stops at a
  remainder (below d);
- every name of the question has a value stated (`so A=3.`) and every stated value is the name's true value.
"""
from __future__ import annotations

import re

_QUESTION = re.compile(r"Let (.*)\. Compute (.*)\.$")
_CHAIN = re.compile(r"(\d+)((?:-\d+=\d+)+)")
_STATED = re.compile(r"so ([A-Z])=(\d+)\.")


def true_values(question: str) -> dict[str, int]:
    """Each name's value, evaluated from the question's definitions (mod, +, brackets, earlier names)."""
    m = _QUESTION.match(question.strip())
    if m is None:
        raise ValueError(f"not a remainders question: {question!r}")
    values: dict[str, int] = {}
    for definition in re.split(r", (?=[A-Z] = )", m.group(1)):
        name, expr = definition.split(" = ", 1)
        python = re.sub(r"\b([A-Z])\b", lambda t: str(values[t.group(1)]), expr).replace("mod", "%")
        if not re.fullmatch(r"[\d+%() ]+", python):
            raise ValueError(f"definition {definition!r} of {question!r} holds more than numbers, mod, + and brackets")
        values[name] = int(eval(python, {"__builtins__": {}}, {}))  # digits, +, %, brackets only (checked above)
    return values


def chain_problem(chain: str, divisors: set[int]) -> str:
    """What is wrong with one subtraction chain '89-9=80-9=71' ("" when it is true and ends at a remainder)."""
    first, rest = _CHAIN.fullmatch(chain).groups()  # type: ignore[union-attr]
    value, step = int(first), 0
    for d_text, v_text in re.findall(r"-(\d+)=(\d+)", rest):
        d, v = int(d_text), int(v_text)
        if d not in divisors:
            return f"'{chain[:40]}': subtracts {d}, not a divisor of the question"
        if value - d != v:
            return f"'{chain[:40]}': {value}-{d} is not {v}"
        value, step = v, d
    if value >= step:
        return f"'{chain[:40]}': stops at {value}, not below {step}"
    return ""


def steps_problem(question: str, text: str) -> str:
    """Why the reasoning in `text` is not true for `question` ("" when every step and stated value is)."""
    values = true_values(question)
    divisors = {int(d) for d in re.findall(r"mod (\d+)", question)}
    for m in _CHAIN.finditer(text):
        why = chain_problem(m.group(0), divisors)
        if why:
            return why
    stated = _STATED.findall(text)
    for name, value in stated:
        if name not in values:
            return f"states {name}={value}, a name the question does not define"
        if int(value) != values[name]:
            return f"states {name}={value}, but {name} is {values[name]}"
    missing = sorted(set(values) - {name for name, _ in stated})
    return f"never states {', '.join(missing)}" if missing else ""
