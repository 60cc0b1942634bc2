"""KV memory under pressure: admission passes a prompt that does not fit (bounded, so it is not starved),
a fork that fails half way gives back every page reference it took, abort frees a forked request at once."""
from __future__ import annotations

import pytest

from engine.api import MultiverseLM
from engine.branch import Status
from engine.kv_pool import OutOfPages
from engine.params import SamplingParams
from engine.request import Phase
from multiverse.attention.scanner import Fork
from multiverse.encode import fork_prefix_ids
from multiverse.tiny import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread

LONG = SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True)
SHORT = SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=8)


def small_pool(model, tok, **kw) -> MultiverseLM:
    """40 pages of 4 slots: a 60-token prompt running leaves no room for a 100-token one (25 pages)."""
    return MultiverseLM(model, tok, page_size=4, num_pages=40, reserve_pages=2, check_integrity=True, **kw)


def test_a_prompt_that_does_not_fit_does_not_block_smaller_ones(model, tok):
    lm = small_pool(model, tok)
    running = lm.submit(list(range(40, 100)), LONG)
    lm.step()
    big = lm.submit(list(range(100, 200)), SHORT)
    smalls = [lm.submit([40 + i, 41, 42, 43], SHORT) for i in range(3)]
    lm.step()
    assert big.phase is Phase.WAITING and all(s.phase is not Phase.WAITING for s in smalls)
    while lm.has_work():
        lm.step()
    assert [r.output.finish_reason for r in (running, big, *smalls)] == ["length"] * 5
    assert lm.pool.num_used == 0


def test_the_skipped_prompt_is_not_starved(model, tok):
    lm = small_pool(model, tok, admission_skip_limit=2)
    running = lm.submit(list(range(40, 100)), LONG)
    lm.step()
    big = lm.submit(list(range(100, 200)), SHORT)
    smalls, started = [], {}
    for step in range(300):  # bounded; a new small prompt arrives at every one of the first 60 steps
        if step < 60:
            smalls.append(lm.submit([40 + step % 7, 41, 42, 43], SHORT))
        lm.step()
        for r in [big, *smalls]:
            if r.phase is not Phase.WAITING:
                started.setdefault(r.request_id, step)
        if not lm.has_work():
            break
    assert not lm.has_work() and lm.pool.num_used == 0
    assert [started[s.request_id] for s in smalls[:2]] == [0, 1]  # two passed it ...
    assert all(started[s.request_id] >= started[big.request_id] for s in smalls[2:])  # ... then it went first
    assert started[big.request_id] <= running.output.stats.generated_tokens + 1  # as soon as the pages were free
    assert big.output.finish_reason == "length"


def test_a_prompt_larger_than_the_pool_is_refused_at_once(model, tok):
    lm = small_pool(model, tok)
    running = lm.submit(list(range(40, 100)), LONG)
    lm.step()
    with pytest.raises(ValueError, match=r"prompt: 320 tokens can never fit .* holds 152 tokens per request .*raise num_pages \(--num-pages\)"):
        lm.submit(list(range(40, 200)) * 2, SHORT)  # 320 tokens: 80 pages > 38 usable
    assert len(lm.scheduler.waiting) == 0 and running.phase is Phase.RUNNING  # nothing queued, the neighbour goes on
    edge = lm.submit(list(range(40, 192)), SHORT)  # 152 tokens: exactly the 38 usable pages, accepted (it waits)
    while lm.has_work():
        lm.step()
    assert running.output.finish_reason == "length" and edge.output.finish_reason in ("length", "out_of_memory")


def test_a_fork_that_fails_half_way_gives_every_page_back(model, tok):
    lm = MultiverseLM(model, tok, page_size=1, num_pages=64, reserve_pages=0, check_integrity=True)
    request = lm.submit("Consider", SamplingParams(max_new_tokens=5, seed=0, ignore_eos=True))
    lm.step()
    parent = request.root
    taken = [lm.pool.alloc() for _ in range(lm.pool.num_free)]  # a full pool: the first child's prefix has no page
    event = Fork(("1", "2"), parent.state.position)
    before = list(lm.pool.refcount)
    with pytest.raises(OutOfPages):
        lm.scheduler._fork(request, parent, event, [fork_prefix_ids(label, lm.vocab) for label in event.labels])
    assert lm.pool.refcount == before and parent.forks == [] and parent.status is Status.RUNNING
    lm.pool.check_integrity([b.pages for b in request.branches()] + [[p] for p in taken])
    lm.pool.decref(taken)
    while lm.has_work():
        lm.step()
    assert request.output.finish_reason == "length" and lm.pool.num_used == 0
