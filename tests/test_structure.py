"""Text-level structure: parsing real traces, canonical form, round trips, errors, twin."""
from __future__ import annotations

import glob
import os

import pytest

from multiverse.data import EXAMPLES_DIR
from multiverse.structure import StructureError, canonicalize, parse, sequential_twin, serialise

EXAMPLES = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.xml")))  # shipped in multiverse/data


def test_examples_exist() -> None:
    assert [os.path.basename(p) for p in EXAMPLES] == ["1.xml", "13.xml", "2.xml", "4.xml", "5.xml"]


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
