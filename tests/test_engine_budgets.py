"""Position budgets are exact (engine/positions.py): on 1,000 structured requests with short critical budgets,
some in a model whose context is only a few dozen positions, no position of any final sequence passes
`max_critical_tokens` or the context, the stats agree with the core's count of the final ids, and a fork whose
forced prefix cannot fit ends the request before it."""
from __future__ import annotations

import copy
import random

import pytest

from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.attention import StructureRules, count_tokens, position_ids
from multiverse.encode import encode_trace
from multiverse.tags import TagIds
from multiverse.tiny import build_model
from tests.test_engine_invariant import random_trace
from tests.test_engine_robustness import ChaosProcessor, mutate

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=27)


def one_request(rng: random.Random, tok, tags: TagIds) -> tuple[list[int], SamplingParams, StructureRules]:
    history = f"Before: {random_trace(rng)} ok. " if rng.random() < 0.2 else ""  # a prompt holding blocks
    prompt = encode_trace(history + rng.choice(["Let's think.", "Question: 12 * 12?", "x"]), tok)
    body = random_trace(rng)
    if rng.random() < 0.4:  # deeper nesting: more closing </Path>s owed when a budget ends the request
        body = body.replace("<Path>1: ", "<Path>1: " + random_trace(rng, 1, "1."), 1)
    script = encode_trace(body, tok)
    target = prompt + (mutate(script, tags, tok.eos_token_id, rng) if rng.random() < 0.3 else script)
    rules = StructureRules(True, rng.choice([None, 3]), rng.choice([None, 2]))
    params = SamplingParams(
        max_new_tokens=rng.choice([400, 400, rng.randint(5, 60)]),
        max_critical_tokens=rng.choice([None, rng.randint(1, 12), rng.randint(1, 45)]),
        temperature=0.0,
        max_paths=rules.max_paths,
        max_depth=rules.max_depth,
        logits_processors=[ChaosProcessor(target + [tok.eos_token_id], len(prompt), tok, rules, rng.randrange(10**6))],
    )
    return prompt, params, rules


def test_thousand_structured_requests_never_pass_either_position_limit(tok, model):
    rng = random.Random(27)
    tags = TagIds.from_tokenizer(tok)
    short = copy.deepcopy(model)
    short.config.max_position_embeddings = 72  # a context most scripted answers outgrow
    bound = {"critical_length": 0, "length": 0}
    forks = 0
    for batch in range(20):
        lm = MultiverseLM(short if batch % 2 else model, tok, check_integrity=batch % 5 == 0, page_size=4, max_batch_tokens=64)
        context = lm.max_positions
        work = []
        while len(work) < 50:
            work += [w for w in [one_request(rng, tok, tags)] if len(w[0]) < context - 8]
        outs = lm.generate([w[0] for w in work], [w[1] for w in work])
        assert lm.pool.num_used == 0
        for out, (prompt, params, rules) in zip(outs, work):
            ids = prompt + out.token_ids
            positions = position_ids(ids, tok, rules=rules)
            base = int(positions[len(prompt) - 1])
            top = int(positions.max())
            if params.max_critical_tokens is not None:
                assert top - base <= params.max_critical_tokens, (out.finish_reason, top - base, params.max_critical_tokens)
            assert top <= context - 1, (out.finish_reason, top, context)
            counts = count_tokens(ids, tok, len(prompt), rules)
            assert out.stats.critical_path == counts.critical_path == top - base
            in_prompt = count_tokens(prompt, tok, 0, rules).num_forks
            assert out.stats.num_forks == counts.num_forks - in_prompt  # no fork without its children's prefixes
            if out.finish_reason == "critical_length":  # the critical budget bound, not the context
                assert params.max_critical_tokens is not None and base + params.max_critical_tokens <= context - 1
            if out.finish_reason == "length" and top == context - 1:
                bound["length"] += 1
            if out.finish_reason == "critical_length" and top - base == params.max_critical_tokens:
                bound["critical_length"] += 1
            forks += out.stats.num_forks
    assert bound["critical_length"] > 50 and bound["length"] > 20 and forks > 300, (bound, forks)
