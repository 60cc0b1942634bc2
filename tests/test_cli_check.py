"""`multiverse check` as a user runs it: a real subprocess on real files."""
from __future__ import annotations

import os
import subprocess
import sys

from multiverse.data import EXAMPLES_DIR

EXAMPLE = str(EXAMPLES_DIR / "5.xml")  # shipped in multiverse/data


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multiverse.cli", "check", *args], capture_output=True, text=True)


def test_check_prints_tree_and_parallelism() -> None:
    out = _check(EXAMPLE, "--tokenizer", "tiny")
    assert out.returncode == 0, out.stderr
    assert "Path 1.1" in out.stdout and "Conclusion" in out.stdout
    dop = float(out.stdout.strip().split("degree of parallelism")[-1])
    assert 1.0 < dop < 3.0


def test_check_reports_rule_and_location(tmp_path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("intro\n<Parallel><Goal><Outline>1: a</Outline></Goal>\n<Path>1: b\n<Conclusion>c</Conclusion>")
    out = _check(str(bad))
    assert out.returncode == 1 and out.stdout == ""
    (line,) = out.stderr.splitlines()  # one line on stderr, the CLI's error format
    assert line.startswith(f"multiverse check: error: {bad}: line 4, column 1")
    assert "unclosed <Path> opened at line 3" in line


def test_check_names_a_file_that_is_not_utf8_and_goes_on(tmp_path) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 <Parallel>".encode("latin-1"))
    good = tmp_path / "good.txt"
    good.write_text("plain text")
    out = _check(str(latin), str(good))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr == f"multiverse check: error: {latin}: not UTF-8 text (byte 3: b'\\xe9')\n"
    assert f"{good}: ok" in out.stdout.replace("\n", "")


def test_check_a_missing_file_is_a_usage_error(tmp_path) -> None:
    out = _check(str(tmp_path / "nope.xml"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"multiverse check: error: {tmp_path / 'nope.xml'}: no such file\n"


def test_check_rejects_an_unloadable_tokenizer_once(tmp_path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("plain text")
    out = _check(str(good), "--tokenizer", str(tmp_path / "no-tokenizer"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"multiverse check: error: --tokenizer {tmp_path / 'no-tokenizer'}")
