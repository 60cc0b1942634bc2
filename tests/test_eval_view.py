"""`multiverse view`: one self-contained HTML page of a real eval run (the default model and its twin on the
remainders task), loaded in headless Chromium (skipped where absent): no console errors, the right counts."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess

import pytest

from multiverse.cli import main
from multiverse.demo import BASELINE_MODEL
from multiverse.evaluation.cli import add_arguments, run
from multiverse.evaluation.view.tree import Ruler, render

pytestmark = pytest.mark.usefixtures("one_thread")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def viewed(tmp_path_factory):
    """A real run (6 questions, model and baseline), its page, and the records it shows."""
    out = tmp_path_factory.mktemp("view") / "run"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--tasks", "remainders", "--limit", "6", "--max-new-tokens", "800", "--batch-size", "6",
                              "--baseline-model", str(BASELINE_MODEL), "--out", str(out), "--no-progress"])
    assert run(args) == 0
    assert main(["view", str(out)]) == 0
    records = {side: [json.loads(x) for x in (out / sub / "records.jsonl").read_text().splitlines()]
               for side, sub in (("model", "."), ("baseline", "baseline"))}
    return out / "view.html", records


def test_page_is_self_contained(viewed) -> None:
    page, records = viewed
    html = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # nothing fetched from anywhere
    assert "<link" not in html and not re.search(r"<script[^>]+src", html)
    assert html.count('src="data:image/png;base64,') >= 1
    every = records["model"] + records["baseline"]
    assert html.count('<details class="sample"') == len(every) == 12
    assert html.count('data-correct="1"') == sum(r["correct"] for r in every)
    forked = [r for r in records["model"] if r["forks"] > 0 and r["valid"]]
    assert forked and html.count('class="path critical"') >= len(forked)  # one per block on the critical path


def _chromium(path, tmp_path) -> tuple[str, list[str]]:
    """(DOM after the scripts ran, console lines) of a file loaded in headless Chromium."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)")
def test_page_loads_in_chromium_with_the_right_counts(viewed, tmp_path) -> None:
    page, records = viewed
    broken = tmp_path / "broken.html"  # the console is read: a page with an error is caught
    broken.write_text(page.read_text().replace("apply();\n})();", "apply(); notDefined();\n})();"))
    assert any("notDefined" in line for line in _chromium(broken, tmp_path)[1])
    dom, console = _chromium(page, tmp_path)
    assert console == []
    every = records["model"] + records["baseline"]
    counts = {key: int(n) for key, n in re.findall(r'data-filter="(\w+)"[^>]*>[^<]*<span class="count">(\d+)</span>', dom)}
    assert counts == {"all": 12, "correct": sum(r["correct"] for r in every), "wrong": sum(not r["correct"] for r in every),
                      "forked": sum(r["forks"] > 0 for r in every), "unforked": sum(r["forks"] == 0 for r in every)}
    assert '<span id="shown">12</span>' in dom and '<span id="total">12</span>' in dom


def test_critical_path_follows_the_longest_path_of_each_block() -> None:
    trace = ("<Parallel><Goal><Outline>1: a</Outline><Outline>2: b</Outline></Goal>"
             "<Path>1: short</Path>"
             "<Path>2: long <Parallel><Goal><Outline>1: c</Outline><Outline>2: d</Outline></Goal>"
             "<Path>1: tiny</Path><Path>2: much longer text</Path><Conclusion>e</Conclusion></Parallel></Path>"
             "<Conclusion>done</Conclusion></Parallel> Answer: 1")
    html = render(trace, (), Ruler(len, "characters"))
    heads = re.findall(r'<div class="(path(?: critical)?)"><div class="head">Path (\d) · (\d+) characters', html)
    assert [(cls, label) for cls, label, _ in heads] == [("path", "1"), ("path critical", "2"), ("path", "1"),
                                                        ("path critical", "2")]
    assert int(heads[1][2]) > int(heads[0][2])  # the outer path 2 holds the nested block: longer
    cut = render("<Parallel><Goal><Outline>1: a</Outline></Goal><Path>1: x", (), Ruler(len, "characters"))
    assert "structure not valid" in cut and "1: x" in cut


def test_view_refuses_a_folder_that_is_not_a_run(tmp_path, capsys) -> None:
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["view", str(tmp_path)]) == 2
    assert "not a multiverse eval run" in capsys.readouterr().err
