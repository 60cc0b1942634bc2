"""Usage errors come back at once: the README's list, each through the real CLI with `python -X importtime`.

A usage error must be found before torch, transformers, datasets or the grader (math-verify, sympy) is imported:
those imports are what took a minute on a loaded machine. Each case checks the exit status 2, exactly one line
`multiverse <command>: error: ...` on stderr with no traceback, and (from importtime's own record) that none of
the heavy modules was imported; the failure message lists the slowest imports.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from multiverse.errors import cuda_driver_devices

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "transformers", "datasets", "sympy", "math_verify", "accelerate", "tokenizers"}


def run_timed(*argv: str) -> tuple[subprocess.CompletedProcess, list[str], dict[str, int]]:
    """Run argv with -X importtime: (process, the stderr lines that are not importtime's, microseconds per module)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    lines, imported = [], {}
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            _, _, cumulative, name = (part.strip() for part in line.split("|", 1)[0].split(":") + line.split("|")[1:])
            if cumulative.isdigit():
                imported[name] = int(cumulative)
        else:
            lines.append(line)
    return proc, lines, imported


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(command, argv after `multiverse`, text the error line holds): the README's list of usage errors."""
    bad_config = tmp / "bad.yaml"
    bad_config.write_text("train:\n  max_steps: many\n")
    return [
        ("generate", ["generate", ""], "the prompt is empty"),
        ("generate", ["generate", "   "], "the prompt is empty"),
        ("generate", ["generate", "--temperature", "-1", "Add 2 and 3."], "--temperature -1"),
        ("generate", ["generate", "--model", str(tmp / "nope"), "Add 2 and 3."], "no such directory"),
        ("generate", ["generate", "--device", "cpu:x", "Add 2 and 3."], "not a device"),
        ("check", ["check", str(tmp / "nope.xml")], "nope.xml: no such file"),
        ("eval", ["eval", "--tasks", "aime2024"], "unknown 'aime2024'"),
        ("eval", ["eval", "--tasks", str(tmp / "missing.jsonl")], "missing.jsonl: no such file"),
        ("eval", ["eval", "--limit", "0"], "--limit 0"),
        ("train", ["train", "--config", str(bad_config)], "max_steps"),
        ("train", ["train", "--config", str(tmp / "none.yaml")], "none.yaml"),
        ("curate", ["curate", "--stats", str(tmp / "nope.xml")], "--stats"),
        ("curate", ["curate", "--config", str(tmp / "none.yaml")], "none.yaml"),
        ("serve", ["serve", "--model", str(tmp / "nope")], "no such directory"),
    ]


def check_fast_usage_error(command: str, argv: list[str], expected: str, module: str = "multiverse.cli") -> None:
    proc, lines, imported = run_timed("-m", module, *argv)
    slowest = sorted(imported.items(), key=lambda kv: -kv[1])[:5]
    assert proc.returncode == 2, (argv, proc.returncode, lines)
    errors = [line for line in lines if not line.startswith("usage:") and line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"multiverse {command}: error: "), (argv, lines)
    assert expected in errors[0], (argv, errors[0])
    assert not HEAVY & set(imported), (argv, sorted(HEAVY & set(imported)), slowest)


def test_usage_errors_exit_2_on_one_line_before_any_heavy_import(tmp_path):
    for command, argv, expected in cases(tmp_path):
        check_fast_usage_error(command, argv, expected)


def test_a_busy_port_is_reported_before_the_model_loads():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_fast_usage_error("serve", ["serve", "--host", "127.0.0.1", "--port", str(s.getsockname()[1])], "cannot listen")


@pytest.mark.skipif(cuda_driver_devices() > 0, reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_from_the_driver_alone():
    check_fast_usage_error("generate", ["generate", "--device", "cuda", "Add 2 and 3."], "no CUDA device")


def test_diagnose_reports_a_missing_model_on_one_line(tmp_path):
    check_fast_usage_error("demo.diagnose", ["--model", str(tmp_path / "nope")], "no such directory",
                           module="multiverse.demo.diagnose")
    proc, lines, _ = run_timed("-m", "multiverse.demo.diagnose", "--model", str(tmp_path / "nope"), "--debug")
    assert proc.returncode == 2 and "Traceback" in "\n".join(lines)  # --debug: the traceback too
