"""The remainders step check: every generated trace (default and widened task, parallel and sequential) passes;
a false subtraction, a wrong divisor, a wrong or missing stated value fails, naming what is wrong."""
from __future__ import annotations

import pytest

from multiverse.demo.remainders import HELD_OUT, dependent, independent, make_rows
from multiverse.demo.verify import steps_problem, true_values
from multiverse.demo.wide import WIDE


@pytest.mark.parametrize("shape", [HELD_OUT, WIDE])
def test_every_generated_trace_passes(shape) -> None:
    for row in make_rows(300, seed=11, shape=shape):
        for field in ("deepseek_thinking_trajectory_parallel", "deepseek_thinking_trajectory"):
            assert steps_problem(row["question"], row[field]) == "", row["question"]
        assert true_values(row["question"])  # every name evaluates


def test_a_right_answer_with_false_steps_fails() -> None:
    p = independent([((14, 4),), ((7, 3), (9, 5))])  # A = 2, B = 1 + 4 = 5
    assert steps_problem(p.question, p.trace) == ""
    assert "10-4 is not 5" in steps_problem(p.question, p.trace.replace("10-4=6", "10-4=5", 1))
    assert "subtracts 2" in steps_problem(p.question, p.trace.replace("14-4=10-4=6-4=2", "14-2=12", 1))
    assert "stops at 6" in steps_problem(p.question, p.trace.replace("14-4=10-4=6-4=2", "14-4=10-4=6", 1))
    assert "states A=3, but A is 2" in steps_problem(p.question, p.trace.replace("so A=2.", "so A=3.", 1))
    assert "never states B" in steps_problem(p.question, p.trace.replace("so B=5.", "so 5.", 1))
    q = dependent((13, 4), [(10, 4)])  # A = 1, B = 11 mod 4 = 3
    assert steps_problem(q.question, q.trace) == "" and true_values(q.question) == {"A": 1, "B": 3}
    with pytest.raises(ValueError, match="not a remainders question"):
        true_values("What is 2+2?")
