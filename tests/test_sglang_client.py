"""The SGLang client (`MultiverseLM(backend="sglang", url=...)`) against `multiverse serve`'s SGLang-native
`/generate` on loopback: token-identical to the native engine on scripted nested structures, several blocks
per request, 16 concurrent requests, SPEC §6 fallbacks, both budgets, aborts; same trees, stats and events.

The served engine follows the same scripts through a combined scripted processor (keyed by the ids a branch
sees, so any request of any target finds its next token). `multiverse serve` has no cross-request prefix
cache: it re-lays every merge out with the core's mask and positions, so merges are exact in tokens and are
counted `merges_recomputed` (cached_tokens 0).
"""
from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sglang_scripted import ScriptedServedLM, scripted_jobs  # noqa: E402
from sglang_support import random_block  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.events import BranchOpened, Finished  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from multiverse.tiny import build_model  # noqa: E402
from tests.server_support import start  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tok):
    native = MultiverseLM(build_model(tok, seed=7), tok, check_integrity=True)
    served_lm = ScriptedServedLM(build_model(tok, seed=7), tok, check_integrity=True)
    server = start(served_lm, model_name="tiny")
    client = MultiverseLM(tokenizer=tok, backend="sglang", url=server.url)
    yield native, served_lm, client
    client.close()
    server.stop()
    assert served_lm.pool.num_used == 0


def scripted(tok, setup, bodies: list[str], raw: bool = False, **kw):
    """Prompts and native params following `bodies`; the served engine gets the same scripts."""
    prompts, params, setup[1].script = scripted_jobs(tok, bodies, raw, **kw)
    return prompts, params


def same(a, b) -> None:
    assert b.token_ids == a.token_ids and b.finish_reason == a.finish_reason
    assert [(i.label, i.text, i.finish_reason, i.depth) for i in b.tree] == [(i.label, i.text, i.finish_reason, i.depth) for i in a.tree]
    for field in ("generated_tokens", "forced_tokens", "critical_path", "num_forks", "num_merges", "fallbacks"):
        assert getattr(b.stats, field) == getattr(a.stats, field), field
    assert b.stats.merges_recomputed == a.stats.num_merges and b.stats.merges_exact == 0
    # raw model logprobs (the processor only picks): equal only if the server used the core's positions and mask
    assert [x is None for x in b.logprobs] == [x is None for x in a.logprobs]
    assert all(abs(x - y) <= 1e-4 for x, y in zip(a.logprobs, b.logprobs) if x is not None)


def run_both(setup, prompts, params):
    native, _, client = setup
    want = native.generate(prompts, params)
    got = client.generate(prompts, [replace(p, logits_processors=()) for p in params])
    for a, b in zip(want, got):
        same(a, b)
    return want, got


def test_nested_and_several_blocks_token_identical(tok, setup):
    rng = random.Random(3)
    bodies = ["Plan: " + random_block(rng, nest=0.9) + " so" + random_block(rng) + " done" for _ in range(3)]
    want, got = run_both(setup, *scripted(tok, setup, bodies, max_new_tokens=2000))
    assert all(a.finish_reason == "stop" and a.stats.num_merges >= 2 for a in want)
    assert any(i.depth == 2 for a in got for i in a.tree)  # a nested path
    assert all(len(b.stats.merge_prefill_tokens) == b.stats.num_merges for b in got)


def test_sixteen_concurrent_requests(tok, setup):
    rng = random.Random(16)
    bodies = [random_block(rng, nest=0.3) + " end" for _ in range(16)]
    want, _ = run_both(setup, *scripted(tok, setup, bodies, max_new_tokens=600))
    assert sum(a.stats.num_forks for a in want) >= 16


def test_fallbacks_run_sequentially_like_native(tok, setup):
    bodies = [
        "<Parallel><Goal>no outlines</Goal><Path>1: x</Path><Conclusion>c</Conclusion></Parallel> after",
        "<Parallel><Goal><Outline>no label</Outline></Goal><Path>1: x</Path><Conclusion>c</Conclusion></Parallel>",
        "<Parallel><Goal><Outline>1: a</Outline><Outline>2: b</Outline></Goal><Path>1: x</Path><Path>2: y</Path>"
        "<Conclusion>c</Conclusion></Parallel> and <Parallel><Goal><Outline>1: a</Outline></Goal><Path>1: z</Path>"
        "<Conclusion>d</Conclusion></Parallel>",
    ]
    want, _ = run_both(setup, *scripted(tok, setup, bodies, raw=True, max_new_tokens=400, max_paths=1))
    assert [a.stats.fallbacks for a in want] == [["no_outlines"], ["unlabelled_outline"], ["too_many_paths"]]
    assert want[2].stats.num_forks == 1  # the one-path block still forks under max_paths=1


@pytest.mark.parametrize("budget", [dict(max_new_tokens=25), dict(max_new_tokens=2000, max_critical_tokens=30)])
def test_budgets_cut_like_native(tok, setup, budget):
    rng = random.Random(9)
    bodies = ["Plan: " + random_block(rng, nest=0.9) for _ in range(3)]
    want, _ = run_both(setup, *scripted(tok, setup, bodies, **budget))
    assert {a.finish_reason for a in want} <= {"length", "critical_length"} and any(
        i.finish_reason in ("length", "critical_length") for a in want for i in a.tree[1:])


def test_abort_after_the_first_fork_like_native(tok, setup):
    native, _, client = setup
    rng = random.Random(5)
    prompts, params = scripted(tok, setup, ["Plan: " + random_block(rng, nest=0.9)], max_new_tokens=2000)

    def aborted(lm, p):
        finished = None
        for event in lm.stream(prompts, p):
            if isinstance(event, BranchOpened) and finished is None:
                finished = lm.abort(event.request_id)
            if isinstance(event, Finished):
                return event.output, finished

    (a, _), (b, b_now) = aborted(native, params), aborted(client, [replace(p, logits_processors=()) for p in params])
    assert a.finish_reason == b.finish_reason == "abort" and b.token_ids == a.token_ids and b_now.token_ids == b.token_ids
    assert b.stats.num_forks == 1 and all(i.finish_reason == "abort" for i in b.tree[1:])


def test_the_client_refuses_what_it_cannot_do(tok, setup):
    _, _, client = setup
    with pytest.raises(ValueError, match="server-side processor"):
        client.generate(["x"], SamplingParams(logits_processors=[lambda ids, logits: logits]))
    with pytest.raises(ValueError, match="needs url"):
        MultiverseLM(tokenizer=tok, backend="sglang")
    assert client.server.name == "native" and client.server.exact


def test_the_backend_is_chosen_by_composition(setup):
    """MultiverseLM is one class whatever the backend; engine/backend.py picks what it holds; the front and the
    client do not import each other."""
    import subprocess

    from engine.native import NativeEngine
    from engine.sglang.client import SGLangClient

    native, _, client = setup
    assert type(client) is type(native) is MultiverseLM
    assert isinstance(client.backend, SGLangClient) and isinstance(native.backend, NativeEngine)
    for first, never in [("engine.sglang.client", "engine.api"), ("engine.api", "engine.sglang.client")]:
        probe = f"import sys, {first}; assert {never!r} not in sys.modules, '{first} imports {never}'"
        subprocess.run([sys.executable, "-c", probe], check=True, timeout=120)


def test_generate_cli_with_backend_sglang(capsys):
    """`multiverse generate --backend sglang --url ...` prints the same tokens as the native engine."""
    import json

    from multiverse.cli import main
    from multiverse.demo import DEFAULT_MODEL

    native = MultiverseLM(str(DEFAULT_MODEL))
    question = "Let A = 83 mod 5, B = 58 mod 5, C = 50 mod 5, D = 56 mod 5. Compute A+B+C+D."
    want = native.generate([[{"role": "user", "content": question}]], SamplingParams(temperature=0, max_new_tokens=120))[0]
    server = start(MultiverseLM(str(DEFAULT_MODEL)), model_name="tiny")
    try:
        code = main(["generate", question, "--backend", "sglang", "--url", server.url, "--max-new-tokens", "120",
                     "--no-live", "--json"])
    finally:
        server.stop()
    assert code == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1]
    got = json.loads(line)
    assert got["token_ids"] == want.token_ids and got["stats"]["num_forks"] == want.stats.num_forks >= 1
