"""`multiverse.demo.diagnose`: teacher-forced loss per kind of token of the shipped pair on held-out rows."""
from __future__ import annotations

import json

import pytest

from multiverse.demo import BASELINE_MODEL, DEFAULT_MODEL
from multiverse.demo.diagnose import kind_of, main, path_label
from multiverse.demo.remainders import held_out_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text, target, kind", [
    ("<Parallel><Goal><Outline>1: A", "</Outline>", "other"),
    ("<Parallel><Goal><Outline>1: A</Outline></Goal><Path>1: A = 6", "2", "copy"),
    ("</Goal><Path>1: A = 62 mod 6: 62-6=5", "6", "step"),
    ("</Goal><Path>1: A = 62 mod 6: 62-6=56-6=50, so", " A", "value"),
    ("</Path><Conclusion></Conclusion></Parallel>Total: A=", "2", "total"),
    ("A = 62 mod 6: 62-6=56, so A=2.\nB = 8", "7", "copy"),  # a line of the twin
    ("</Goal><Path>", "2", "other"),
])
def test_kind_of_reads_the_remainders_format(text: str, target: str, kind: str) -> None:
    assert kind_of(text, target, forced=False) == kind
    assert kind_of(text, target, forced=True) == "forced"


@pytest.mark.parametrize("text, label", [
    ("A = 62 mod 6: 62-6=56", "-"),  # the twin: no path
    ("<Parallel><Goal><Outline>1: A</Outline></Goal><Path>1: A = 6", "1"),
    ("</Path><Path>4: D = (7 mod 3)+(8 mod 3): <Parallel><Goal>..</Goal><Path>4.2: 8", "4.2"),  # nested: innermost
    ("<Path>4.1: 7 mod 3: 7-3=4-3=1, so 1.</Path><Path>4.2: 8 mod 3: 2, so 2.</Path><Conclusion></Conclusion>"
     "</Parallel> 1+2=3, so D=3.</Path><Path>5: E = 1", "5"),
    ("<Path>4: D = 7 mod 3: 1, so D=1.</Path><Conclusion></Conclusion></Parallel>Total: A=", "-"),
])
def test_path_label_is_the_innermost_open_path(text: str, label: str) -> None:
    assert path_label(text) == label


def _report(capsys, path, rows_file, twin: bool) -> dict:
    main(["--model", str(path), "--rows", str(rows_file), "--limit", "2"] + (["--twin"] if twin else []))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_twin_sees_repeats_that_a_multiverse_path_cannot(tmp_path, capsys) -> None:
    rows = [r for r in held_out_rows(12) if not r["dependent"]][:2]
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    mv, ar = _report(capsys, DEFAULT_MODEL, rows_file, False), _report(capsys, BASELINE_MODEL, rows_file, True)
    paths = sum(r["deepseek_thinking_trajectory_parallel"].count("<Path>") for r in rows)
    # each forked path's <Path> LABEL ":" (the label may be one or more tokens) and one <Conclusion> per block
    assert mv["kinds"]["forced"]["tokens"] >= 3 * paths and "forced" not in ar["kinds"]
    assert mv["kinds"]["forced"]["loss"] > mv["kinds"]["step"]["loss"]  # sibling labels share one context
    for r in (mv, ar):
        assert sum(k["tokens"] for k in r["kinds"].values()) == sum(k["tokens"] for k in r["repeated"].values())
        assert {"copy", "step", "value", "total"} <= set(r["kinds"])
        by_path = r["copy_by_path"]
        assert sum(p["tokens"] for p in by_path.values()) == r["kinds"]["copy"]["tokens"]
        assert sum(p["wrong"] for p in by_path.values()) == r["kinds"]["copy"]["wrong"]
    assert set(ar["copy_by_path"]) == {"-"} and {"1", "2"} <= set(mv["copy_by_path"])
    share = {n: r["repeated"]["repeated"]["tokens"] / sum(k["tokens"] for k in r["repeated"].values())
             for n, r in (("mv", mv), ("ar", ar))}
    assert share["ar"] > 2 * share["mv"]
