"""Start-up checks of the SGLang plugin against a REAL SGLang 0.5.23 (marker `sglang`; skipped unless
MV_SGLANG_VENV and MV_SGLANG_LAUNCH are set: see tests/sglang_support.py).

What the plugin cannot serve exactly is refused when the server starts, by name: data parallelism, speculative
decoding, an attention backend that forces pages larger than one token (Blackwell's default trtllm_mha), and an
SGLang version other than the pinned one (one line naming both versions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import LAUNCH, VENV, free_port, needs_sglang  # noqa: E402

from engine.sglang.plugin.checks import SGLANG_VERSION  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402

pytestmark = needs_sglang(1200)
ENV = dict(os.environ, SGLANG_CPU_STUBS="1", SGLANG_USE_CPU_ENGINE="1", PYTHONWARNINGS="ignore")


def venv_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(VENV, "bin", "python")), "-c", code], capture_output=True, text=True,
                          env=env or ENV, timeout=600)


def launch(*extra: str) -> subprocess.CompletedProcess:
    """The real launcher with the plugin; it must exit by itself (a refused start never serves)."""
    args = ["bash", str(LAUNCH), VENV, str(DEFAULT_MODEL), str(free_port()), "--radix-cache-backend", "multiverse", *extra]
    return subprocess.run(args, capture_output=True, text=True, env=dict(ENV, SGLANG_PLUGINS="multiverse"), timeout=600)


def test_sglang_server_args_go_through_the_same_checks():
    code = f"""
import json
from sglang.srt.server_args import prepare_server_args
from engine.sglang.plugin import resolved
from engine.sglang.plugin.checks import server_args_problems
cases = [["--page-size", "1"], ["--attention-backend", "flashinfer", "--tp-size", "2"], ["--dp-size", "2"],
         ["--speculative-algorithm", "EAGLE"], ["--attention-backend", "trtllm_mha"]]
out = []
for extra in cases:
    a = prepare_server_args(["--model-path", "{DEFAULT_MODEL}", "--radix-cache-backend", "multiverse", *extra])
    try:
        a.resolve_once()  # on this CPU machine a GPU backend's resolution fails after the page size is set
    except Exception:
        pass
    out.append(server_args_problems(resolved(a)))
print(json.dumps(out))
"""
    run = venv_python(code)
    ok, tp, dp, spec, trt = json.loads(run.stdout.strip().splitlines()[-1])
    assert ok == [] and tp == [], run.stderr[-2000:]
    assert "--dp-size 2" in dp[0] and "--speculative-algorithm EAGLE" in spec[0]
    assert "--page-size 1 (got 64)" in trt[0] and "trtllm_mha" in trt[0] and "--attention-backend flashinfer" in trt[0]


@pytest.mark.parametrize("extra, words", [(("--dp-size", "2"), "does not support --dp-size 2"),
                                          (("--speculative-algorithm", "EAGLE"), "--speculative-algorithm EAGLE")])
def test_launch_is_refused_with_the_reason(extra, words):
    run = launch("--page-size", "1", *extra)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: --radix-cache-backend multiverse") and words in last, run.stderr[-3000:]


def test_a_wrong_sglang_version_fails_start_up_in_one_line():
    code = (
        "import runpy, sys, sglang\n"
        "sglang.__version__ = '0.5.22'\n"
        f"sys.argv = ['sglang.launch_server', '--model-path', '{DEFAULT_MODEL}', '--radix-cache-backend', 'multiverse']\n"
        "runpy.run_module('sglang.launch_server', run_name='__main__')\n"
    )
    run = venv_python(code, dict(ENV, SGLANG_PLUGINS="multiverse"))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"the multiverse SGLang plugin needs sglang=={SGLANG_VERSION}, found sglang 0.5.22: "
        'install it with pip install "multiverse[sglang]" (which pins it)'
    ]
    # installed but not asked for: an unrelated server still starts (the plugin only logs and stays out)
    quiet = venv_python("import sglang\nsglang.__version__ = '0.5.22'\nfrom sglang.srt.plugins import load_plugins\n"
                        "load_plugins()\nfrom sglang.srt.mem_cache.registry import get_radix_cache_factory\n"
                        "print('registered', get_radix_cache_factory('multiverse') is not None)\n")
    assert quiet.returncode == 0 and quiet.stdout.strip().endswith("registered False"), quiet.stderr[-2000:]
