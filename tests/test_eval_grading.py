"""Grading table: (kind, gold, raw model output, truncated) -> (correct, extracted answer, method).

Raw outputs keep special tokens, as the engine's raw decode does; grading reads `graded_text` of them.
"""
from __future__ import annotations

import pytest

from multiverse.evaluation import Problem, grade, graded_text, is_correct
from multiverse.evaluation.extraction import extract_letter, extract_math, last_number

IM = "<|im_end|>"

# kind, gold, raw output, truncated, correct, predicted, method
TABLE = [
    # special tokens
    ("math", "\\frac{1}{2}", f"Answer: \\frac{{1}}{{2}}{IM}", False, True, "\\frac{1}{2}", "answer_line"),
    ("math", "22", f"<Parallel><Goal>g<Outline>1: a</Outline></Goal><Path>1: 22</Path><Conclusion>c</Conclusion></Parallel>\nAnswer: 22{IM}", False, True, "22", "answer_line"),
    ("word", "22", "<Path>1: so 17+5 = 22</Path><Path>2: 49+26 = 75</Path>", False, False, "75", "last_number"),
    ("word", "75", "<Path>1: so 17+5 = 22</Path><Path>2: 49+26 = 75</Path><|endoftext|>", False, True, "75", "last_number"),
    ("math", "3", f"\\boxed{{3}}{IM}{IM}", False, True, "3", "boxed"),
    # boxed forms
    ("math", "70", "Answer: \\boxed{70}", False, True, "70", "boxed"),
    ("math", "70", "Answer: \\boxed{71}", False, False, "71", "boxed"),
    ("math", "\\frac{1}{2}", "\\boxed{0.5}", False, True, "0.5", "boxed"),
    ("math", "\\frac{1}{2}", "so $\\boxed{\\dfrac12}$.", False, True, "\\dfrac12", "boxed"),
    ("math", "5", "first \\boxed{4}, corrected: \\boxed{5}", False, True, "5", "boxed"),
    ("math", "5", "\\fbox{5}", False, True, "5", "boxed"),
    ("math", "5", "the result is \\boxed 5", False, True, "5", "boxed"),
    ("math", "7", "\\boxed{7} then a cut \\boxed{", False, True, "7", "boxed"),
    ("math", "{2}+3", "\\boxed{{2}+3}", False, True, "{2}+3", "boxed"),
    ("math", "5", "\\boxed{} Answer: 5", False, True, "5", "answer_line"),
    # LaTeX equivalence
    ("math", "\\left( 3, \\frac{\\pi}{2} \\right)", "The point is \\boxed{(3, \\pi/2)}", False, True, "(3, \\pi/2)", "boxed"),
    ("math", "\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi)}", False, False, "(3, \\pi)", "boxed"),
    ("math", "\\frac{\\sqrt{2}}{2}", "\\boxed{\\sqrt{2}/2}", False, True, "\\sqrt{2}/2", "boxed"),
    ("math", "3\\pi", "\\boxed{3 \\pi}", False, True, "3 \\pi", "boxed"),
    ("math", "x^2+1", "\\boxed{1 + x^2}", False, True, "1 + x^2", "boxed"),
    ("math", "2\\sqrt{3}", "\\boxed{\\sqrt{12}}", False, True, "\\sqrt{12}", "boxed"),
    ("math", "-\\frac{3}{4}", "\\boxed{-0.75}", False, True, "-0.75", "boxed"),
    ("math", "\\frac{3}{4}", "\\boxed{-0.75}", False, False, "-0.75", "boxed"),
    ("math", "5", "\\boxed{x = 5}", False, True, "x = 5", "boxed"),
    ("math", "10", "\\boxed{10^\\circ}", False, True, "10^\\circ", "boxed"),
    # intervals and sets
    ("math", "(0,1]", "\\boxed{(0, 1]}", False, True, "(0, 1]", "boxed"),
    ("math", "(0,1]", "\\boxed{[0, 1)}", False, False, "[0, 1)", "boxed"),
    ("math", "[-2, 5)", "Answer: $[-2,5)$", False, True, "[-2,5)", "answer_line"),
    ("math", "\\{1,2\\}", "\\boxed{\\{2, 1\\}}", False, True, "\\{2, 1\\}", "boxed"),
    ("math", "\\{1,2\\}", "\\boxed{\\{1, 3\\}}", False, False, "\\{1, 3\\}", "boxed"),
    ("math", "(-\\infty, 3)", "\\boxed{(-\\infty,3)}", False, True, "(-\\infty,3)", "boxed"),
    # units and percent
    ("math", "5", "\\boxed{5 \\text{ cm}}", False, True, "5 \\text{ cm}", "boxed"),
    ("math", "12", "Answer: 12 \\text{ meters}", False, True, "12 \\text{ meters}", "answer_line"),
    ("math", "25\\%", "\\boxed{25\\%}", False, True, "25\\%", "boxed"),
    # leading zeros and thousands
    ("math", "7", "\\boxed{007}", False, True, "007", "boxed"),
    ("math", "25", "Answer: 025", False, True, "025", "answer_line"),
    ("math", "1000", "\\boxed{1,000}", False, True, "1,000", "boxed"),
    ("math", "1000", "\\boxed{1{,}000}", False, True, "1{,}000", "boxed"),
    ("word", "1000", "The answer is 1,000.", False, True, "1000", "answer_phrase"),
    ("word", "1000", "So they sold 1,000.", False, True, "1000", "last_number"),
    ("word", "1234567", "Total: 1,234,567 dollars", False, True, "1234567", "last_number"),
    ("word", "70000", "He made $70,000 in profit.", False, True, "70000", "last_number"),
    ("word", "5", "The answer is 5 (checked with 3 cases).", False, True, "5", "answer_phrase"),
    ("word", "5", "So we get 5 (checked (twice) with 3 cases).", False, True, "5", "last_number"),
    # "the answer is X" and "equals X" for math tasks, as lighteval reads them (math-verify compares)
    ("math", "5", "The answer is 5.", False, True, "5", "answer_phrase"),
    ("math", "5", "The answer is 5.", True, True, "5", "answer_phrase"),  # a claim, also when cut later
    ("math", "-3", "so x equals -3", False, True, "-3", "equals_phrase"),
    ("math", "-3", "so x equals -3", True, False, None, "none"),  # a cut output: equals is only a step
    ("math", "\\frac{1}{2}", "The final answer is $\\dfrac12$. I hope it is correct.", False, True, "\\dfrac12", "answer_phrase"),
    ("math", "7", "A+B is equal to 5, so the answer is 7 (from 3+4).", False, True, "7", "answer_phrase"),
    ("math", "7", "first x equals 2, then y equals 7", False, True, "7", "equals_phrase"),
    ("math", "7", "the answer is what we find after checking all the cases carefully", False, False, None, "none"),
    ("word", "3.5", "so each costs 3.5.", False, True, "3.5", "last_number"),
    ("word", "-4", "the change is -4", False, True, "-4", "last_number"),
    ("word", "34", "we get 12,34", False, True, "34", "last_number"),
    # answer lines
    ("math", "42", "...\n\nAnswer: 42.\n", False, True, "42", "answer_line"),
    ("math", "42", "Final Answer: $42$", False, True, "42", "answer_line"),
    ("math", "42", "**Answer:** 42", False, True, "42", "answer_line"),
    ("math", "42", "Answer: 41\nwait\nAnswer: 42", False, True, "42", "answer_line"),
    ("math", "42", "Answer:\nthen nothing 42", False, False, None, "none"),
    ("math", "6", "Answer: \\(6\\)", False, True, "6", "answer_line"),
    # last number: word problems only, never truncated
    ("math", "17", "we get 3 and then 17", False, False, None, "none"),
    ("word", "17", "we get 3 and then 17", False, True, "17", "last_number"),
    ("word", "17", "we get 3 and then 17", True, False, None, "none"),
    ("word", "17", "\\boxed{17} and more text 9", True, True, "17", "boxed"),
    ("word", "204", "no answer at all", False, False, None, "none"),
    ("word", "18", "Janet sells 16 - 3 - 4 = 9 eggs at $2 each, 9 * 2 = 18", False, True, "18", "last_number"),
    # multiple choice
    ("choice", "B", "B", False, True, "B", "bare_letter"),
    ("choice", "B", f"B{IM}", False, True, "B", "bare_letter"),
    ("choice", "B", "Thinking...\n(B).", False, True, "B", "bare_letter"),
    ("choice", "B", "The answer is B", False, True, "B", "answer_phrase"),
    ("choice", "B", "so the answer is (B) because", False, True, "B", "answer_phrase"),
    ("choice", "C", "The correct option is C.", False, True, "C", "answer_phrase"),
    ("choice", "B", "\\boxed{B}", False, True, "B", "boxed"),
    ("choice", "B", "\\boxed{(B)}", False, True, "B", "boxed"),
    ("choice", "B", "\\boxed{\\text{B}}", False, True, "B", "boxed"),
    ("choice", "B", "Answer: B", False, True, "B", "answer_line"),
    ("choice", "C", "Answer: (C) because", False, True, "C", "answer_line"),
    ("choice", "D", "I pick (B) over (A), finally (D)", False, True, "D", "paren_letter"),
    ("choice", "A", "A ball is thrown; which is right?", False, False, None, "none"),
    ("choice", "A", "Answer: Both are wrong", False, False, None, "none"),
    ("choice", "B", "Answer: (A)", False, False, "A", "answer_line"),
]


@pytest.mark.parametrize("kind,gold,raw,truncated,correct,predicted,method", TABLE)
def test_grading_table(kind, gold, raw, truncated, correct, predicted, method) -> None:
    g = grade(Problem("p", "q", gold, kind), graded_text(raw, ("<|im_end|>", "<|endoftext|>")), truncated=truncated)
    assert (g.correct, g.predicted, g.method) == (correct, predicted, method)


def test_table_is_big_enough() -> None:
    assert len(TABLE) >= 60


def test_issue_examples() -> None:
    assert is_correct(Problem("p", "q", "\\frac{1}{2}", "math"), "Answer: \\frac{1}{2}<|im_end|>")[0]
    assert last_number("The answer is 1,000.") == "1000"
    assert last_number("The answer is 5 (checked with 3 cases).") == "5"
    assert extract_letter("B").answer == "B" and extract_letter("The answer is B").answer == "B"


def test_tags_separate_paths_in_graded_text() -> None:
    raw = "<Path>1: = 22</Path><Path>2: 49</Path>"
    assert "222" not in graded_text(raw) and "<" not in graded_text(raw)
    assert extract_math(graded_text(raw), word_problem=True).answer == "49"
