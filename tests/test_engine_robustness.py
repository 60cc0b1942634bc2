"""SPEC §6: 1,000 randomized malformed tag streams; every request ends with a result, integrity holds after
every step, the pool returns to empty, and what was generated still obeys the SPEC §5 invariant."""
from __future__ import annotations

import random

import pytest
import torch

from engine.api import MultiverseLM
from engine.events import BranchOpened, Finished
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import StructureRules, dense_mask, position_ids
from multiverse.encode import encode_trace
from multiverse.tags import TagIds
from multiverse.tiny import build_model
from tests.test_engine_invariant import random_trace

FINISH = {"stop", "length", "critical_length", "out_of_memory", "abort"}


class ChaosProcessor(ScriptedProcessor):
    """Follows a (mutated) script; where the engine's branch is off script, writes tag-heavy random tokens."""

    def __init__(self, target, prompt_len, tok, rules, seed: int) -> None:
        super().__init__(target, prompt_len, tok, rules)
        self.choices = list(TagIds.from_tokenizer(tok).all()) * 3 + [tok.eos_token_id] + list(range(40, 60))
        self.seed = seed

    def __call__(self, visible_ids, logits):
        token = self.next.get(tuple(visible_ids))
        if token is None:
            token = random.Random(hash((self.seed, len(visible_ids), tuple(visible_ids[-4:])))).choice(self.choices)
        out = torch.full_like(logits, float("-inf"))
        out[token] = 0.0
        return out


def mutate(ids: list[int], tags: TagIds, eos: int, rng: random.Random) -> list[int]:
    """Missing outlines, stray </Path>, unclosed paths, too many paths, deep nesting, EOS inside a branch."""
    ids = list(ids)
    for _ in range(rng.randint(0, 3)):
        kind = rng.randrange(6)
        at = rng.randrange(len(ids) + 1)
        if kind == 0 and tags.outline_open in ids:  # drop an outline's opening tag
            ids.remove(tags.outline_open)
        elif kind == 1:
            ids.insert(at, tags.path_close)
        elif kind == 2 and tags.path_close in ids:
            ids.remove(tags.path_close)
        elif kind == 3:
            ids.insert(at, eos)
        elif kind == 4:
            ids.insert(at, rng.choice(tags.all()))
        else:
            ids = ids[: max(1, at)]
    return ids


def one_request(rng: random.Random, tok, tags: TagIds) -> tuple[list[int], SamplingParams, StructureRules]:
    prompt = tok(rng.choice(["Let's think.", "Question: 12 * 12?", "x", "Path Goal Outline"]))["input_ids"]
    body = random_trace(rng)
    if rng.random() < 0.3:  # deep nesting and many paths
        body = body.replace("<Path>1: ", "<Path>1: " + random_trace(rng, 1, "1."), 1)
    target = prompt + mutate(encode_trace(body, tok), tags, tok.eos_token_id, rng)
    rules = StructureRules(True, rng.choice([None, 2, 3]), rng.choice([None, 1, 2]))
    params = SamplingParams(
        max_new_tokens=rng.randint(8, 120),
        max_critical_tokens=rng.choice([None, None, 30]),
        temperature=rng.choice([0.0, 1.0]),
        seed=rng.randrange(10**6),
        logprobs=True,
        max_paths=rules.max_paths,
        max_depth=rules.max_depth,
        stop_token_ids=rng.choice([(), (), (tags.conclusion_close,)]),
        logits_processors=[ChaosProcessor(target, len(prompt), tok, rules, rng.randrange(10**6))],
    )
    return prompt, params, rules


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=11)


def test_thousand_malformed_requests(tok, model):
    rng = random.Random(2026)
    tags = TagIds.from_tokenizer(tok)
    reasons: set[str] = set()
    fallbacks: set[str] = set()
    checked = preempted = 0
    for batch in range(20):
        small = batch % 2 == 1  # half the batches run in a pool too small for them: preemption, out_of_memory
        lm = MultiverseLM(
            model, tok, check_integrity=True, page_size=4, num_pages=30 if small else 2048, reserve_pages=2, max_running=32
        )
        work = [one_request(rng, tok, tags) for _ in range(50)]
        outs = lm.generate([w[0] for w in work], [w[1] for w in work])
        assert lm.pool.num_used == 0 and not lm.scheduler.has_work()
        for out, (prompt, params, rules) in zip(outs, work):
            assert out.finish_reason in FINISH
            assert out.tree and all(b.finish_reason for b in out.tree)
            assert out.stats.generated_tokens <= params.max_new_tokens
            reasons.add(out.finish_reason)
            preempted += out.stats.num_preemptions
            fallbacks.update(out.stats.fallbacks)
            if len(out.token_ids) and rng.random() < 0.1:
                checked += _assert_invariant(model, tok, out, rules)
    assert {"stop", "length", "out_of_memory"} <= reasons, reasons
    assert {"no_outlines", "too_many_paths", "too_deep"} & fallbacks, fallbacks
    assert checked > 10 and preempted > 0


def _assert_invariant(model, tok, out, rules) -> int:
    ids = out.prompt_token_ids + out.token_ids
    mask = dense_mask(ids, tok, rules=rules)[None, None]
    pos = position_ids(ids, tok, rules=rules)[None]
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=pos).logits[0], -1)
    n = len(out.prompt_token_ids)
    for i, lp in enumerate(out.logprobs):
        if lp is not None:
            assert abs(lp - float(ref[n + i - 1, ids[n + i]])) < 1e-4, (i, ids)
    return 1


def test_abort_mid_branch_frees_everything(tok, model):
    rng = random.Random(5)
    p_ids = tok("Consider")["input_ids"]
    target = p_ids + encode_trace(random_trace(rng), tok) + [tok.eos_token_id]
    lm = MultiverseLM(model, tok, check_integrity=True, page_size=4)
    params = SamplingParams(temperature=0, logits_processors=[ScriptedProcessor(target, len(p_ids), tok)])
    other = SamplingParams(max_new_tokens=30, temperature=1.0, seed=3)
    aborted = None
    for event in lm.stream([p_ids, "The answer"], [params, other]):
        if isinstance(event, BranchOpened) and aborted is None:
            aborted = lm.abort(event.request_id)
            assert aborted.finish_reason == "abort"
            lm.check_integrity()
        if isinstance(event, Finished):
            assert event.output.finish_reason in FINISH
    assert aborted is not None and aborted.tree[0].label == ""
    assert lm.pool.num_used == 0


def test_stream_consumer_stopping_early_frees_everything(tok, model):
    lm = MultiverseLM(model, tok, check_integrity=True)
    stream = lm.stream(["a", "b", "c"], SamplingParams(max_new_tokens=50, seed=1))
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    assert lm.pool.num_used == 0 and not lm.scheduler.has_work()


def test_a_failing_processor_ends_its_request_alone_and_the_engine_goes_on(tok, model):
    lm = MultiverseLM(model, tok, check_integrity=True)

    def broken(visible, logits):
        if len(visible) > 6:
            raise RuntimeError("processor bug")
        return logits

    good = SamplingParams(max_new_tokens=20, seed=2)
    bad, ok = lm.generate(  # ignore_eos + seeds: the broken request surely grows past 6 visible ids (no early EOS)
        ["a", "b"], [SamplingParams(max_new_tokens=20, ignore_eos=True, seed=1, logits_processors=[broken]), good]
    )
    assert bad.finish_reason == "error" and "processor bug" in bad.error
    assert ok.finish_reason in {"stop", "length"} and ok.error is None
    assert ok.token_ids == lm.generate(["b"], good)[0].token_ids
    assert lm.pool.num_used == 0 and not lm.scheduler.has_work()
