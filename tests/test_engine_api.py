"""The per-request contract of engine/api.py: submit validates one request, events go to its own sink, abort
frees at once and still reports Finished, and one request's fault never changes what its neighbours write."""
from __future__ import annotations

import copy

import pytest
import torch

from engine.api import MultiverseLM
from engine.events import BranchOpened, Finished, Merged, Tokens
from engine.params import SamplingParams
from multiverse.tiny import build_model
from tests.test_engine_sampling import TRACE, scripted

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, seed=4)


@pytest.fixture()
def lm(model, tok):
    return MultiverseLM(model, tok, check_integrity=True, page_size=4)


def run_all(lm: MultiverseLM) -> list:
    done = []
    for _ in range(10_000):  # bounded: every request here ends within a few hundred steps
        if not lm.has_work():
            return done
        done += lm.step()
    raise AssertionError("the engine did not drain")


def test_submit_rejects_one_bad_request_and_queues_nothing(lm, tok):
    bad = [
        (5, TypeError, "prompt: a string"),
        ("", ValueError, "prompt: empty string"),
        ([], ValueError, "prompt: empty list"),
        ([3, 10**6], ValueError, r"prompt\[1\]: token id 1000000"),
        ([3, True], TypeError, r"prompt\[1\]"),
        ([{"role": "user"}], TypeError, "string 'content'"),
    ]
    for prompt, kind, match in bad:
        with pytest.raises(kind, match=match):
            lm.submit(prompt)
    with pytest.raises(ValueError, match="top_k"):
        lm.submit("x", SamplingParams(top_k=len(tok) + 1))
    with pytest.raises(TypeError, match="SamplingParams"):
        lm.submit("x", {"temperature": 0})
    assert not lm.has_work() and lm.pool.num_used == 0


def test_a_chat_template_that_raises_is_a_value_error_from_submit(model, tok):
    tok2 = copy.deepcopy(tok)
    tok2.chat_template = (
        "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
        "{{ raise_exception('the first message must be the system prompt') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    lm = MultiverseLM(model, tok2, check_integrity=True)
    with pytest.raises(ValueError, match="chat template rejected.*system prompt"):
        lm.submit([{"role": "user", "content": "hi"}])
    assert not lm.has_work()
    request = lm.submit([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=2))
    assert request in run_all(lm) and request.output.finish_reason in {"stop", "length"}


def test_generate_names_the_bad_one_before_anything_runs(lm):
    params = [SamplingParams(max_new_tokens=3, seed=i) for i in range(3)]
    with pytest.raises(TypeError, match="request 1: sampling params"):
        lm.generate(["a", "b", "c"], [params[0], {"seed": "abc"}, params[2]])
    with pytest.raises(ValueError, match="request 2: prompt: empty string"):
        lm.generate(["a", "b", ""], params)
    assert not lm.has_work() and lm.pool.num_used == 0


def test_submit_step_abort_and_per_request_sinks(lm, tok):
    p_ids, fork = scripted(tok, "Consider", TRACE)
    mine, other = [], []
    a = lm.submit(p_ids, fork, mine.append)
    b = lm.submit("The answer", SamplingParams(max_new_tokens=60, seed=0, ignore_eos=True), other.append)
    while not any(isinstance(e, BranchOpened) for e in mine):
        lm.step()
    out = lm.abort(a.request_id)  # mid-fork, children alive
    assert out.finish_reason == "abort" and lm.abort(a.request_id) is None
    lm.check_integrity()
    assert isinstance(mine[-1], Finished) and mine[-1].output is out
    assert {e.request_id for e in mine} == {a.request_id} and {e.request_id for e in other} == {b.request_id}
    assert lm.pool.num_used == sum(len(br.pages) for br in b.branches())  # only b holds pages now
    assert b.output is None and b in run_all(lm) and isinstance(other[-1], Finished)
    assert lm.pool.num_free == lm.pool.num_pages  # everything back
    assert sum(isinstance(e, Finished) for e in mine + other) == 2


def test_two_interleaved_streams_each_get_all_their_events(lm, tok):
    p_ids, fork = scripted(tok, "Consider", TRACE)
    s1 = lm.stream([p_ids], fork)
    s2 = lm.stream(["The answer"], SamplingParams(max_new_tokens=8, seed=1, ignore_eos=True))
    got1, got2 = [], []
    for e1, e2 in zip(s1, s2):  # each generator steps the shared engine in turn
        got1.append(e1)
        got2.append(e2)
    got1 += list(s1)
    got2 += list(s2)
    for got in (got1, got2):
        assert len({e.request_id for e in got}) == 1 and isinstance(got[-1], Finished)
        text = "".join(e.text for e in got if isinstance(e, Tokens) and e.label == "")
        assert text and got[-1].output.finish_reason in {"stop", "length"}
    assert got2[-1].output.stats.generated_tokens == 8
    assert lm.pool.num_used == 0


def test_finished_is_yielded_when_the_consumer_aborts_the_last_request(lm):
    events = []
    for event in lm.stream(["a"], SamplingParams(max_new_tokens=50, seed=1, ignore_eos=True)):
        events.append(event)
        if len(events) == 3:
            lm.abort(event.request_id)
    assert isinstance(events[-1], Finished) and events[-1].output.finish_reason == "abort"
    assert lm.pool.num_used == 0


def test_a_raising_processor_leaves_the_neighbours_tokens_unchanged(model, tok):
    def broken(visible, logits):
        if len(visible) > 5:
            raise RuntimeError("processor bug")
        return logits

    def wrong_shape(visible, logits):  # returns the wrong shape: a TypeError of this request only
        return logits[:3] if len(visible) > 4 else logits

    p_ids, fork = scripted(tok, "Consider", TRACE)
    good = [SamplingParams(max_new_tokens=30, temperature=1.0, top_k=20, seed=9, logprobs=True, ignore_eos=True), fork]
    solo_lm = MultiverseLM(model, tok, check_integrity=True, page_size=4)
    solo = [solo_lm.generate(["The answer is"], good[0])[0], solo_lm.generate([p_ids], good[1])[0]]
    lm = MultiverseLM(model, tok, check_integrity=True, page_size=4)
    bad = [SamplingParams(max_new_tokens=30, seed=1, ignore_eos=True, logits_processors=[f]) for f in (broken, wrong_shape)]
    outs = lm.generate(["x y", "The answer is", p_ids, "Path"], [bad[0], good[0], good[1], bad[1]])
    assert outs[0].finish_reason == "error" and "processor bug" in outs[0].error
    assert outs[3].finish_reason == "error" and "shape" in outs[3].error
    for got, want in zip(outs[1:3], solo):
        assert got.error is None and got.token_ids == want.token_ids and got.finish_reason == want.finish_reason
    torch.testing.assert_close(torch.tensor(outs[1].logprobs), torch.tensor(solo[0].logprobs), atol=1e-4, rtol=0)
    assert outs[2].stats.num_forks == 1 and lm.pool.num_used == 0


@pytest.mark.parametrize("raise_on", [Tokens, BranchOpened, Merged, Finished])
def test_a_raising_sink_ends_only_its_request_and_still_gets_one_finished(lm, tok, raise_on):
    seen = []

    def sink(event):
        seen.append(event)
        if isinstance(event, raise_on):
            raise OSError("client gone")

    p_ids, params = scripted(tok, "Consider", TRACE)  # forks and merges: every kind of event is emitted
    a = lm.submit(p_ids, params, sink)
    b = lm.submit("b", SamplingParams(max_new_tokens=10, seed=2, ignore_eos=True))
    run_all(lm)
    assert [type(e) for e in seen].count(Finished) == 1 and isinstance(seen[-1], Finished)
    assert seen[-1].output is a.output
    if raise_on is Finished:  # the request was over: its result stands
        assert a.output.finish_reason == "stop" and a.output.error is None
    else:
        assert a.output.finish_reason == "error" and "client gone" in a.output.error
        assert sum(isinstance(e, raise_on) for e in seen) == 1  # nothing but Finished after the fault
    assert b.output.finish_reason == "length" and len(b.output.token_ids) == 10
    assert lm.pool.num_used == 0
