"""The openai backend against `multiverse serve` on loopback: same accuracy and degree of parallelism as the
native backend on the same questions and seeds (greedy), with counts recomputed from the returned text."""
from __future__ import annotations

import argparse
import contextlib
import json

import pytest

from engine.api import MultiverseLM
from multiverse.demo import DEFAULT_MODEL
from multiverse.errors import CommandError, UsageError
from multiverse.evaluation.cli import add_arguments, prepare_out, resolve_settings
from multiverse.evaluation.session import Session

pytestmark = pytest.mark.usefixtures("one_thread")
COMMON = ["--tasks", "remainders", "--limit", "3", "--max-new-tokens", "800", "--batch-size", "1", "--no-progress"]


@contextlib.contextmanager
def served(model: str):
    """`multiverse serve` on 127.0.0.1 (any free port); the one place that knows the server's start API."""
    lm = MultiverseLM(model)
    try:
        from engine.server import start, stop  # the threaded server: start(lm, host, port, name) -> (server, worker)
    except ImportError:
        from tests.server_support import start as start_app  # the FastAPI server: start(lm, **config) -> Server

        app = start_app(lm, model_name="tiny")
        try:
            yield app.url + "/v1"
        finally:
            app.stop()
        return
    server, worker = start(lm, "127.0.0.1", 0, "tiny")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        stop(server, worker)


def _run(tmp_path, name: str, *argv: str) -> list[dict]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*COMMON, "--out", str(tmp_path / name), *argv])
    settings = resolve_settings(args)
    assert Session(settings, prepare_out(args, settings), progress=False).run() == 0
    rows = [json.loads(line) for line in (tmp_path / name / "records.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: r["id"])


@pytest.mark.slow
def test_openai_backend_matches_native(tmp_path) -> None:
    native = _run(tmp_path, "native")
    with served(str(DEFAULT_MODEL)) as url:
        remote = _run(tmp_path, "openai", "--backend", "openai", "--url", url, "--concurrency", "1")
    assert [r["id"] for r in native] == [r["id"] for r in remote]
    for a, b in zip(native, remote):
        assert a["seed"] == b["seed"] and a["raw_text"] == b["raw_text"]
        for field in ("correct", "predicted", "method", "generated_tokens", "forced_tokens", "critical_path",
                      "degree_of_parallelism", "forks", "valid"):
            assert a[field] == b[field], field
    assert any(r["forks"] > 0 for r in remote) and sum(r["correct"] for r in remote) >= 1
    summary = json.loads((tmp_path / "openai" / "summary.json").read_text())
    assert summary["backend"]["backend"] == "openai" and summary["tasks"]["remainders"]["avg@1"]["n"] == 3


def test_openai_backend_errors_name_the_problem(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(UsageError, match="needs --url"):
        resolve_settings(parser.parse_args(["--backend", "openai"]))
    args = parser.parse_args([*COMMON, "--backend", "openai", "--url", "http://127.0.0.1:9/v1", "--max-retries", "0",
                              "--out", str(tmp_path / "x")])
    settings = resolve_settings(args)
    with pytest.raises(CommandError, match="127.0.0.1:9"):
        Session(settings, prepare_out(args, settings), progress=False).run()
