"""The SGLang client's own behaviour against a REAL SGLang 0.5.23 server with the plugin (marker `sglang`; skipped
unless MV_SGLANG_VENV and MV_SGLANG_LAUNCH are set: see tests/sglang_support.py).

- Bounded calls: scripted nested requests whose sequential stretches are 5x the per-call token cap, 8 at
  once, identical to native, every merge exact (1 token prefilled), every stretch decoded in several calls.
- No model path: the client reads SGLang's `/model_info`, loads the tokenizer and generation config there,
  and 5 task questions are identical to native (the model ends on `<|im_end|>`, a generation-config eos).
- A server killed mid-run: every request ends with finish_reason "error" naming the failed call; nothing hangs.
Figures of each run go to stdout (`-s`) and to $MV_SGLANG_CLIENT_REPORT (when set).
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import VENV, SGLangServer, needs_sglang, plugin_server, random_block, report_path, write_report  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from engine.script import ScriptedProcessor  # noqa: E402
from engine.sglang.plugin.script import script_params  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.demo.remainders import held_out_rows  # noqa: E402
from multiverse.encode import encode_trace  # noqa: E402

pytestmark = needs_sglang(2400)
REPORT = report_path("MV_SGLANG_CLIENT_REPORT")
CALL_TOKENS = 24
STRETCH = " so 12" * 60  # 120 tokens with no structure event: 5 calls of 24 tokens


def report(name: str, **figures) -> None:
    write_report(REPORT, name, figures)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    with plugin_server(str(DEFAULT_MODEL), tmp_path_factory.mktemp("sglang") / "plugin.log") as server:
        yield server


@pytest.fixture(scope="module")
def native():
    return MultiverseLM(str(DEFAULT_MODEL))


def long_targets(tok, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(prompt, target): a stretch, a nested block, a stretch inside no block, a second block, EOS."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = tok(f"Add each pair: {i}+{i + 1}.")["input_ids"]
        body = "Plan:" + STRETCH + random_block(rng, nest=0.9) + STRETCH + random_block(rng, nest=0.0) + " done"
        out.append((prompt, prompt + encode_trace(body, tok) + [tok.eos_token_id]))
    return out


def test_stretches_of_five_call_caps_identical_to_native(plugin, native):
    tok = native.tokenizer
    targets = long_targets(tok, 8, seed=3)
    prompts = [p for p, _ in targets]
    procs = [ScriptedProcessor(t, len(p), tok) for p, t in targets]
    want = native.generate(prompts, [SamplingParams(temperature=0, max_new_tokens=3000, logits_processors=[q]) for q in procs])
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=plugin.url, call_tokens=CALL_TOKENS, timeout_s=300)
    started = time.perf_counter()
    try:
        got = lm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=3000),
                          server_processors=[script_params(t, len(p), tok) for p, t in targets])
    finally:
        lm.close()
    wall = time.perf_counter() - started
    for a, b, (p, t) in zip(want, got, targets):
        assert a.prompt_token_ids + a.token_ids == t
        assert b.token_ids == a.token_ids and b.finish_reason == "stop", b.error
        assert b.stats.merges_exact == b.stats.num_merges >= 2 and set(b.stats.merge_prefill_tokens) == {1}
    assert lm.wire.calls >= 2 * len(STRETCH.split()) // CALL_TOKENS and lm.wire.resends == 0
    report("stretches", requests=len(targets), call_tokens=CALL_TOKENS, generated=sum(a.stats.generated_tokens for a in want),
           merges=sum(b.stats.num_merges for b in got), calls=lm.wire.calls, resends=lm.wire.resends, wall_s=round(wall, 1))


def test_no_model_path_five_task_questions_identical(plugin, native):
    lm = MultiverseLM(backend="sglang", url=plugin.url)
    prompts = [[{"role": "user", "content": row["question"]}] for row in held_out_rows(5)]
    params = SamplingParams(temperature=0, max_new_tokens=800)
    try:
        assert lm.server.info["model_path"] == str(DEFAULT_MODEL)
        assert lm.scheduler.eos_ids == native.scheduler.eos_ids
        want, got = native.generate(prompts, params), lm.generate(prompts, params)
    finally:
        lm.close()
    same = sum(a.token_ids == b.token_ids and a.text == b.text for a, b in zip(want, got))
    im_end = sum(a.token_ids[-1] == native.tokenizer.convert_tokens_to_ids("<|im_end|>") for a in want)
    report("no_path", questions=len(prompts), identical=same, ending_on_im_end=im_end)
    assert same == len(prompts)


def test_a_server_killed_mid_run_ends_every_request(tmp_path_factory, native):
    server = SGLangServer(VENV, str(DEFAULT_MODEL), True, tmp_path_factory.mktemp("sglang") / "killed.log")
    try:
        server.wait()
        lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=server.url, call_tokens=16, timeout_s=60, retries=1)
        prompts = [[{"role": "user", "content": row["question"]}] for row in held_out_rows(4)]
        out: list = []
        runner = threading.Thread(target=lambda: out.extend(lm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=800))),
                                  daemon=True)
        runner.start()
        deadline = time.monotonic() + 600
        while lm.wire.calls < 6 and time.monotonic() < deadline:  # a few calls answered: the run is under way
            runner.join(0.2)
        killed = time.perf_counter()
        os.killpg(server.proc.pid, 9)
        runner.join(180)
        ended_in = time.perf_counter() - killed
        lm.close()
    finally:
        server.close()
    assert not runner.is_alive(), "the client hung after its server was killed"
    errors = [o.error for o in out]
    report("killed", requests=len(out), errors=sum(o.finish_reason == "error" for o in out), ended_in_s=round(ended_in, 1),
           first_error=errors[0] if errors else None)
    assert len(out) == 4 and all(o.finish_reason == "error" and "failed 2 times" in o.error for o in out), errors
