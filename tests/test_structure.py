"""Text-level structure: parsing real traces, canonical form, round trips, errors, twin."""
from __future__ import annotations

import glob
import os

import pytest

from multiverse.structure import StructureError, canonicalize, parse, sequential_twin, serialise

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
EXAMPLES = sorted(glob.glob(os.path.join(SHARED, "multiverse_examples", "*.xml")))


def test_examples_exist() -> None:
    assert len(EXAMPLES) == 15


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_real_trace_parses_and_round_trips(path: str) -> None:
    text = open(path, encoding="utf-8").read()
    doc = parse(text)
    blocks = list(doc.blocks())
    assert blocks, "every example trace has parallel blocks"
    assert text.count("<Parallel>") == len(blocks)
    canon = canonicalize(text)
    assert serialise(parse(canon)) == canon
    assert canonicalize(canon) == canon
    for gap in ("</Goal>\n", "</Path>\n<Path>", "</Path>\n<Conclusion>"):
        assert gap not in canon
    assert "</Goal><Path>1: " in canon
    # Content survives: the twin of the reference text equals the twin of its canonical form.
    assert sequential_twin(text).split() == sequential_twin(canon).split()
