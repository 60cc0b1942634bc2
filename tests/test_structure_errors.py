"""Grammar errors name the rule and the place; fuzzed input raises nothing but StructureError."""
from __future__ import annotations

import glob
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiverse.attention import layout
from multiverse.encode import encode_trace
from multiverse.data import EXAMPLES_DIR
from multiverse.structure import StructureError, canonicalize, parse, sequential_twin, serialise
from multiverse.tags import TAGS

REAL = [open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.xml")))]

G1 = "<Goal><Outline>1: a</Outline></Goal>"
CASES = [
    # (text, rule, line, column)
    (f"x<Parallel>{G1}<Conclusion>c</Conclusion></Parallel>", "<Conclusion> before any <Path>", 1, 48),
    (f"x\n<Parallel>\n{G1}\n<Path>1: b\n<Conclusion>c</Conclusion></Parallel>",
     "unclosed <Path> opened at line 4, found <Conclusion>", 5, 1),
    (f"<Parallel>{G1}<Path>1: a</Path><Path>2: b</Path><Conclusion>c</Conclusion></Parallel>",
     "path 2 has no matching outline", 1, 64),
    ("<Parallel><Goal><Outline>1: a</Outline><Outline>2: b</Outline></Goal><Path>1: a</Path>"
     "<Conclusion>c</Conclusion></Parallel>", "outline 2 has no matching path", 1, 87),
    (f"<Parallel>{G1}<Path>2: a</Path><Conclusion>c</Conclusion></Parallel>",
     "path 1 is labelled '2' but outline 1 is labelled '1'", 1, 47),
    ("<Parallel><Path>1: a</Path><Conclusion>c</Conclusion></Parallel>",
     "<Parallel> must begin with <Goal>, found <Path>", 1, 11),
    (f"<Parallel>{G1}junk<Path>1: a</Path><Conclusion>c</Conclusion></Parallel>",
     "text between </Goal> and <Path>", 1, 47),
    ("abc</Path>", "unexpected </Path>", 1, 4),
    ("<Outline>1: a</Outline>", "<Outline> outside a <Parallel> block", 1, 1),
    (f"<Parallel>{G1}<Path>1: a</Path>", "unclosed <Parallel> opened at line 1", 1, 64),
    ("<Parallel><Goal>g</Goal><Path>1: a</Path><Conclusion>c</Conclusion></Parallel>", "<Goal> has no <Outline>", 1, 11),
    ("<Parallel><Goal><Outline>a</Outline></Goal><Path>1: a</Path><Conclusion>c</Conclusion></Parallel>",
     "outline 1 has no label (expected e.g. '1: ...')", 1, 17),
]


@pytest.mark.parametrize("text,rule,line,column", CASES, ids=[c[1][:30] for c in CASES])
def test_error_names_rule_and_place(text: str, rule: str, line: int, column: int) -> None:
    with pytest.raises(StructureError) as info:
        parse(text)
    err = info.value
    assert (err.rule, err.line, err.column) == (rule, line, column)
    assert f"line {line}, column {column}" in str(err)


def test_nested_blocks_parse_and_round_trip() -> None:
    inner = "<Parallel><Goal><Outline>1.1: u</Outline><Outline>1.2: v</Outline></Goal><Path>1.1: uu</Path>" \
            "<Path>1.2: vv</Path><Conclusion>w</Conclusion></Parallel>"
    text = f"a<Parallel><Goal><Outline>1: x</Outline><Outline>2: y</Outline></Goal><Path>1: p{inner} z</Path>" \
           "<Path>2: q</Path><Conclusion>c</Conclusion></Parallel> e"
    doc = parse(text)
    assert [len(b.paths) for b in doc.blocks()] == [2, 2]
    assert serialise(doc) == canonicalize(text) == text
    assert sequential_twin(text).split() == "a p uu vv z q e".split()


STRICT_CASES = [
    # token-level strict layout: (text fragments are encoded without canonicalising)
    ("<Parallel><Goal><Outline>1: a</Outline></Goal><Path>1: b", "unclosed <Path> opened at token"),
    ("<Parallel><Goal><Outline>1: a</Outline><Outline>2: b</Outline></Goal><Path>1: a</Path><Conclusion>",
     "block expects 2 paths, found 1"),
    ("<Parallel><Goal>g</Goal><Path>x</Path>", "block cannot fork: no_outlines"),
]


@pytest.mark.parametrize("text,rule", STRICT_CASES)
def test_strict_layout_errors_carry_token_index(tok, text: str, rule: str) -> None:
    ids = encode_trace(text, tok, canonical=False)
    with pytest.raises(StructureError) as info:
        layout(ids, tok, strict=True)
    assert info.value.rule.startswith(rule)
    assert info.value.token_index is not None and 0 <= info.value.token_index < len(ids)
    lay = layout(ids, tok)  # non-strict never raises
    assert lay.length == len(ids)


PIECES = st.sampled_from(list(TAGS) + ["1: ", "2: ", "1.1: ", "text ", "\n", "Path", "<", ">", "</", "Let's"])


def _check_text(text: str) -> None:
    try:
        canon = canonicalize(text)
    except StructureError:
        return
    assert serialise(parse(canon)) == canon
    sequential_twin(canon)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=40))
def test_tag_soup_raises_only_structure_error(pieces: list[str]) -> None:
    _check_text("".join(pieces))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(REAL) - 1), st.data())
def test_mutated_real_traces_raise_only_structure_error(which: int, data: st.DataObject) -> None:
    text = REAL[which]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["delete", "insert", "swap"]))
        if kind == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 40)) :]
        elif kind == "insert":
            text = text[:at] + data.draw(PIECES) + text[at:]
        else:
            tag = data.draw(st.sampled_from(TAGS))
            text = text.replace(tag, data.draw(st.sampled_from(TAGS)), 1)
    _check_text(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 471), max_size=120))
def test_token_soup_layout_never_fails(tok, ids: list[int]) -> None:
    lay = layout(ids, tok)
    assert lay.length == len(ids)
    dense = lay.dense()
    assert bool(dense.diagonal().all())  # every token sees itself: no fully masked row
    try:
        layout(ids, tok, strict=True)
    except StructureError as err:
        assert err.token_index is not None
