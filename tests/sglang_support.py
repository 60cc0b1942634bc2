"""Helpers of the SGLang backend tests: scripted nested multi-block targets, a real SGLang server on loopback."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from multiverse.encode import encode_trace

# Opt-in: both paths come from the environment, never from this machine's layout.
VENV = os.environ.get("MV_SGLANG_VENV")  # a venv with SGLang 0.5.23 and this checkout installed (--no-deps -e .)
LAUNCH = os.environ.get("MV_SGLANG_LAUNCH")  # the script that starts it: LAUNCH VENV MODEL PORT [server args]


def needs_sglang(timeout_s: int) -> list:
    """The marks of a real-SGLang test module: marker `sglang`, skipped unless both variables name real files."""
    ready = bool(VENV and LAUNCH and Path(VENV, "bin", "python").exists() and Path(LAUNCH).is_file())
    why = "MV_SGLANG_VENV (a venv) and MV_SGLANG_LAUNCH (its launch script) are not both set"
    return [pytest.mark.sglang, pytest.mark.skipif(not ready, reason=why), pytest.mark.timeout(timeout_s)]


def report_path(variable: str) -> Path | None:
    """Where a test module's figures go besides stdout: the file $variable names, if any."""
    return Path(os.environ[variable]) if os.environ.get(variable) else None
WORDS = ["the sum", " is 4", " check x", " so 12", " area 6", " case one", " then 7", " answer"]


def random_block(rng: random.Random, depth: int = 0, prefix: str = "", nest: float = 0.5) -> str:
    """A canonical block with random text, 1-3 paths, nested up to depth 2."""
    labels = [f"{prefix}{i + 1}" for i in range(rng.randint(1, 3))]
    goal = "".join(f"<Outline>{lab}: {rng.choice(WORDS)}</Outline>" for lab in labels)
    paths = ""
    for lab in labels:
        body = rng.choice(WORDS)
        if depth < 2 and rng.random() < nest:
            body += random_block(rng, depth + 1, lab + ".", nest) + rng.choice(WORDS)
        paths += f"<Path>{lab}: {body}</Path>"
    return f"<Parallel><Goal>{rng.choice(WORDS)}{goal}</Goal>{paths}<Conclusion>{rng.choice(WORDS)}</Conclusion></Parallel>"


def scripted_targets(tok, n: int, seed: int, nest: float = 0.9) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids = prompt + two blocks, the first nested, + EOS) per request."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = tok(f"Add each pair: {i}+{i + 1}.")["input_ids"]
        body = "Plan: " + random_block(rng, nest=nest) + " so" + random_block(rng, nest=0.0) + " done"
        out.append((prompt, prompt + encode_trace(body, tok) + [tok.eos_token_id]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SGLangServer:
    """A real SGLang server ($MV_SGLANG_LAUNCH) on loopback; stops itself on close()."""

    def __init__(self, venv: str, model: str, plugin: bool, log: Path, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--enable-custom-logit-processor", *extra]
        if plugin:
            args += ["--radix-cache-backend", "multiverse", "--page-size", "1"]
        env = dict(os.environ, SGLANG_PLUGINS="multiverse" if plugin else "none")
        self.log = open(log, "w")
        self.proc = subprocess.Popen(["bash", str(LAUNCH), venv, model, str(self.port), *args], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout_s: float = 400) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SGLang exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise TimeoutError(f"SGLang not healthy after {timeout_s} s; see {self.log.name}")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


@contextmanager
def plugin_server(model: str, log: Path, *extra: str) -> Iterator[SGLangServer]:
    """A healthy real SGLang with the multiverse plugin on loopback (`extra`: more server flags), stopped on exit
    (a module fixture's body)."""
    server = SGLangServer(VENV, model, True, log, extra)
    try:
        server.wait()
        yield server
    finally:
        server.close()


def write_report(path: Path | None, name: str, figures: dict) -> None:
    """Print one run's figures and, with a path, add them under `name` to the JSON report there."""
    print(name, json.dumps(figures))
    if path is not None:
        data = json.loads(path.read_text()) if path.exists() else {}
        data[name] = figures
        path.write_text(json.dumps(data, indent=1) + "\n")
