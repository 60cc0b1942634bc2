"""Chunked prefill (`max_batch_tokens`, engine/chunking.py): with a step budget so small that every prompt takes
many steps beside decoding neighbours, forks and prompts holding forked blocks, SPEC §5 still holds (log-probs ==
ONE teacher-forced forward with the core's mask and positions) and the tokens equal an unchunked run."""
from __future__ import annotations

import math
import random

import pytest
import torch

from engine.api import MultiverseLM
from engine.events import Tokens
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import position_ids
from multiverse.encode import encode_trace
from multiverse.tiny import build_model
from tests.test_engine_invariant import random_trace, teacher_forced_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=64, num_layers=2, seed=25)


def scripted_requests(tok, rng: random.Random, n: int) -> tuple[list[list[int]], list[SamplingParams]]:
    """Prompts of 10-90 tokens (some holding complete forked blocks), each scripted to write nested blocks."""
    prompts, params = [], []
    for i in range(n):
        words = " ".join(rng.choice(["the sum", "is 4", "check x", "so 12", "area"]) for _ in range(rng.randint(3, 30)))
        history = f"Earlier: {random_trace(rng)} ok. " if i % 3 == 0 else ""
        p_ids = encode_trace(f"{history}Question: {words}. Think.", tok)
        target = p_ids + encode_trace("Plan " + random_trace(rng) + " so" + random_trace(rng), tok) + [tok.eos_token_id]
        proc = ScriptedProcessor(target, len(p_ids), tok)
        prompts.append(p_ids)
        params.append(SamplingParams(max_new_tokens=2000, temperature=0.8, seed=i, logprobs=True, logits_processors=[proc]))
    return prompts, params


@pytest.mark.parametrize("budget", [1, 7])
def test_spec5_holds_with_chunked_prefill_and_tokens_equal_an_unchunked_run(tok, model, budget):
    rng = random.Random(budget)
    prompts, params = scripted_requests(tok, rng, 6)
    assert max(map(len, prompts)) > 8 * budget  # every prompt is prefilled in many chunks
    chunked = MultiverseLM(model, tok, max_batch_tokens=budget, page_size=4, num_pages=1024, check_integrity=True)
    whole = MultiverseLM(model, tok, max_batch_tokens=4096, page_size=4, num_pages=1024)
    outs = chunked.generate(prompts, params)
    refs = whole.generate(prompts, params)
    for out, ref, p_ids, p in zip(outs, refs, prompts, params):
        target = p_ids + out.token_ids
        assert out.finish_reason == "stop" and out.stats.num_forks >= 2 and p.logits_processors[0].misses == 0
        assert out.token_ids == ref.token_ids
        tf = teacher_forced_logprobs(model, tok, target)
        n = len(p_ids)
        sampled = [i for i, lp in enumerate(out.logprobs) if lp is not None]
        got = torch.tensor([out.logprobs[i] for i in sampled])
        torch.testing.assert_close(got, torch.stack([tf[n + i - 1, target[n + i]] for i in sampled]), atol=1e-4, rtol=0)
        torch.testing.assert_close(got, torch.tensor([ref.logprobs[i] for i in sampled]), atol=1e-5, rtol=0)
        positions = position_ids(target, tok)
        assert out.stats.critical_path == int(positions.max()) - int(positions[n - 1])
    assert chunked.pool.num_used == 0


def test_a_long_prompt_samples_after_its_last_chunk_while_a_neighbour_decodes_every_step(tok, model):
    budget = 5
    lm = MultiverseLM(model, tok, max_batch_tokens=budget, check_integrity=True)
    events: dict[int, list[int]] = {}  # request -> steps at which it got tokens
    step = 0

    def sink(event):
        if isinstance(event, Tokens):
            events.setdefault(event.request_id, []).append(step)

    short = lm.submit("x", SamplingParams(max_new_tokens=60, ignore_eos=True, seed=1), sink, raw=True)  # one token
    step = 1
    lm.step()  # the short prompt is prefilled and samples its first token
    long_ids = tok("the sum is 4 and so 12 " * 6)["input_ids"]
    long = lm.submit(long_ids, SamplingParams(max_new_tokens=3, ignore_eos=True, seed=2), sink)
    while long.output is None:
        step += 1
        lm.step()
    chunks = math.ceil(len(long_ids) / (budget - 1))  # the neighbour's decode takes one token of every step
    assert events[long.request_id][0] == 1 + chunks
    assert events[short.request_id][: chunks + 1] == list(range(1, chunks + 2))  # it never skipped a step
