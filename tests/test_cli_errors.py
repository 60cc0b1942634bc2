"""One error style for every command: the real CLI in a subprocess, exit codes and the one-line message."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from multiverse.cli import report
from multiverse.errors import CommandError, UsageError, check_model_path, check_port_free

ROOT = Path(__file__).resolve().parent.parent


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "multiverse.cli", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


def error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """The stderr line of the error; there is exactly one and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"multiverse {command}: error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_unknown_flag_is_reported_under_the_subcommand_usage(tmp_path):
    proc = cli("check", "--bogus", str(tmp_path / "x.txt"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: multiverse check "), proc.stderr
    assert "unrecognized arguments: --bogus" in error_line(proc, "check")


def test_missing_model_path_in_generate(tmp_path):
    proc = cli("generate", "--model", str(tmp_path / "nope"), "hi")
    assert proc.returncode == 2
    assert "nope: no such directory" in error_line(proc, "generate")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_on_a_cpu_machine():
    proc = cli("generate", "--device", "cuda", "hi")
    assert proc.returncode == 2
    assert "no CUDA device" in error_line(proc, "generate")


def test_debug_prints_the_traceback(tmp_path):
    proc = cli("generate", "--debug", "--model", str(tmp_path / "nope"), "hi")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "UsageError" in proc.stderr


def test_version():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("multiverse 0.")


def test_unexpected_errors_are_one_line_with_exit_1(capsys):
    try:
        {}["key"]
    except KeyError as err:
        assert report("x", err, debug=False) == 1
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and out.startswith("multiverse x: error: KeyError: 'key'")
    assert report("x", CommandError("a\nb"), debug=False) == 1
    assert report("x", UsageError("bad flag"), debug=False) == 2
    assert capsys.readouterr().err.splitlines()[1] == "multiverse x: error: bad flag"


def test_model_path_checks(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        check_model_path(str(tmp_path / "empty"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_model_path(str(tmp_path / "file"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match="not in the local Hugging Face cache"):
        check_model_path("no-such-org/no-such-model")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "config.json").write_text("{}")
    assert check_model_path(str(tmp_path / "ok")) == str(tmp_path / "ok")


def test_busy_port_is_a_usage_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)
    with pytest.raises(UsageError, match="0..65535"):
        check_port_free("127.0.0.1", 70000)


def test_print_config_shows_typed_values():
    proc = cli("train", "--config", str(ROOT / "training/configs/tiny_cpu.yaml"), "--set", "train.learning_rate=1e-5",
               "--print-config")
    assert proc.returncode == 0, proc.stderr
    import yaml

    assert yaml.safe_load(proc.stdout)["train"]["learning_rate"] == 1e-5  # a float, not the string "1e-5"
    proc = cli("curate", "--print-config", "--set", "run.concurrency=3")
    assert proc.returncode == 0 and yaml.safe_load(proc.stdout)["run"]["concurrency"] == 3


def test_config_type_error_names_the_set_argument():
    proc = cli("curate", "--config", str(ROOT / "data_pipeline/configs/s1k.yaml"), "--set", "run.concurrency=many")
    assert proc.returncode == 2
    assert "--set run.concurrency=many: run.concurrency = 'many'" in error_line(proc, "curate")


def test_missing_model_path_in_train(tmp_path):
    proc = cli("train", "--config", str(ROOT / "training/configs/tiny_cpu.yaml"),
               "--set", f"model.name_or_path={tmp_path / 'nope'}")
    assert proc.returncode == 2
    assert f"model.name_or_path {tmp_path / 'nope'}: no such directory" in error_line(proc, "train")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--max-new-tokens", "0", "hi"], "--max-new-tokens 0: must be >= 1"),
        (["--temperature", "-1", "hi"], "--temperature -1.0: must be >= 0"),
        (["--top-p", "0", "hi"], "--top-p 0.0: must lie in (0, 1]"),
        (["--raw", ""], "the prompt is empty"),
        (["--threads", "0", "hi"], "--threads 0: must be >= 1"),
    ],
)
def test_generate_flags_are_checked_before_the_model_loads(argv, needle):
    proc = cli("generate", *argv)
    assert proc.returncode == 2
    assert needle in error_line(proc, "generate")
    assert "Loading weights" not in proc.stderr


@pytest.mark.parametrize("command", ["serve", "eval"])
def test_missing_model_path_in_serve_and_eval(command, tmp_path):
    proc = cli(command, "--model", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert f"--model {tmp_path / 'nope'}: no such directory" in error_line(proc, command)


def test_unknown_eval_task_is_named_before_the_model_loads():
    proc = cli("eval", "--tasks", "aime24,aim25")
    assert proc.returncode == 2
    assert "--tasks: unknown 'aim25' (did you mean aime25?)" in error_line(proc, "eval")


def test_serve_on_a_busy_port_fails_before_the_model_loads():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = cli("serve", "--tiny", "--port", str(port))
    assert proc.returncode == 2
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in error_line(proc, "serve")


def test_missing_data_file_in_train_is_named_before_the_model_loads(tmp_path):
    from multiverse.demo import DEFAULT_MODEL

    proc = cli("train", "--config", str(ROOT / "training/configs/tiny_cpu.yaml"), "--model", str(DEFAULT_MODEL),
               "--data", str(tmp_path / "rows.jsonl"))
    assert proc.returncode == 2
    assert f"data.multiverse {tmp_path / 'rows.jsonl'}: no such file" in error_line(proc, "train")
