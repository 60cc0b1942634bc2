"""SamplingParams: every field is type- and range-checked at construction, the error names field and value."""
from __future__ import annotations

import re

import pytest

from engine.params import SamplingParams

BAD = [
    ("seed", "abc", TypeError),
    ("seed", 1.5, TypeError),
    ("seed", True, TypeError),
    ("seed", -1, ValueError),
    ("seed", 2**63, ValueError),
    ("top_k", 2**63, ValueError),
    ("top_k", -2, ValueError),
    ("top_k", 1.0, TypeError),
    ("temperature", -1, ValueError),
    ("temperature", float("nan"), ValueError),
    ("temperature", float("inf"), ValueError),
    ("temperature", "0.5", TypeError),
    ("top_p", 0, ValueError),
    ("top_p", 1.5, ValueError),
    ("max_new_tokens", 0, ValueError),
    ("max_new_tokens", 10.0, TypeError),
    ("max_new_tokens", 2**40, ValueError),
    ("max_critical_tokens", 0, ValueError),
    ("max_paths", 0, ValueError),
    ("max_depth", "2", TypeError),
    ("stop", [""], ValueError),
    ("stop", [3], ValueError),
    ("stop_token_ids", [-1], ValueError),
    ("stop_token_ids", 5, TypeError),
    ("ignore_eos", 1, TypeError),
    ("logprobs", "yes", TypeError),
    ("logits_processors", [42], TypeError),
]


@pytest.mark.parametrize(("field", "value", "kind"), BAD)
def test_bad_values_are_refused_naming_field_and_value(field, value, kind):
    shown = repr(value[0] if field == "stop_token_ids" and isinstance(value, list) else value)
    with pytest.raises(kind, match=rf"SamplingParams\.{field}(\[0\])? .*got " + re.escape(shown[:6])):
        SamplingParams(**{field: value})


def test_good_values_are_normalised():
    p = SamplingParams(seed=2**63 - 1, top_k=-1, temperature=1, stop="END", stop_token_ids=[3], logits_processors=[abs])
    assert p.temperature == 1.0 and isinstance(p.temperature, float)
    assert p.stop == ("END",) and p.stop_token_ids == (3,) and p.logits_processors == (abs,)
    assert SamplingParams(seed=0).seed == 0 and SamplingParams(top_k=0).top_k == 0


def test_vocabulary_checks():
    SamplingParams(top_k=100, stop_token_ids=[99]).check_vocab(100)
    with pytest.raises(ValueError, match="top_k.*vocabulary size 100"):
        SamplingParams(top_k=101).check_vocab(100)
    with pytest.raises(ValueError, match=r"stop_token_ids\[1\].*not in the vocabulary"):
        SamplingParams(stop_token_ids=[1, 100]).check_vocab(100)
