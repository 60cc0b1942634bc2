"""SPEC §5: the engine's logits at every generated position equal ONE teacher-forced forward over the final
sequence with the core's training mask and positions. Scripted structures (nesting, several requests)."""
from __future__ import annotations

import random

import pytest
import torch

from engine.api import MultiverseLM
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import dense_mask, position_ids
from multiverse.encode import encode_trace
from multiverse.tiny import build_model

WORDS = ["the sum", " is 4", " check x", " so 12", " area 6", " case one", " then 7", " answer"]


def random_trace(rng: random.Random, depth: int = 0, prefix: str = "") -> str:
    """A canonical Multiverse block with random text, 1-3 paths, nested up to depth 2."""
    n = rng.randint(1, 3)
    labels = [f"{prefix}{i + 1}" for i in range(n)]
    goal = "".join(f"<Outline>{lab}: {rng.choice(WORDS)}</Outline>" for lab in labels)
    paths = ""
    for lab in labels:
        body = rng.choice(WORDS)
        if depth < 2 and rng.random() < 0.4:
            body += random_trace(rng, depth + 1, lab + ".") + rng.choice(WORDS)
        paths += f"<Path>{lab}: {body}</Path>"
    return f"<Parallel><Goal>{rng.choice(WORDS)}{goal}</Goal>{paths}<Conclusion>{rng.choice(WORDS)}</Conclusion></Parallel>"


def teacher_forced_logprobs(model: torch.nn.Module, tok, ids: list[int]) -> torch.Tensor:
    """log_softmax of ONE forward over ids with the core's mask and positions: [L, V] float32."""
    mask = dense_mask(ids, tok)[None, None]
    pos = position_ids(ids, tok)[None]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=pos).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=64, num_layers=2, seed=3)


@pytest.mark.parametrize("page_size, shared_prefix_slots", [(1, 512), (4, 512), (16, 512), (4, 1), (16, 1)])
def test_scripted_structures_match_one_teacher_forced_forward(tok, model, page_size, shared_prefix_slots):
    """shared_prefix_slots=1: every decode step of two or more paths reads their prefix once (shared_prefix.py)."""
    rng = random.Random(page_size)
    prompts = ["Let's think in parallel.", "Question: what is 12 * 12?", "Consider the triangle", "x"]
    targets, params = [], []
    for prompt in prompts:
        p_ids = tok(prompt)["input_ids"]
        body = "Plan: " + random_trace(rng) + " Final" + (random_trace(rng) if rng.random() < 0.5 else "")
        target = p_ids + encode_trace(body, tok) + [tok.eos_token_id]
        targets.append(target)
        proc = ScriptedProcessor(target, len(p_ids), tok)
        params.append(SamplingParams(max_new_tokens=2000, temperature=0.7, seed=1, logprobs=True, logits_processors=[proc]))
    lm = MultiverseLM(model, tok, page_size=page_size, num_pages=4096 // page_size, check_integrity=True,
                      shared_prefix_slots=shared_prefix_slots)
    outs = lm.generate(prompts, params, raw=True)  # the targets start with tok(prompt): no chat template
    for out, target, p in zip(outs, targets, params):
        assert p.logits_processors[0].misses == 0
        assert out.prompt_token_ids + out.token_ids == target
        assert out.finish_reason == "stop"
        assert out.stats.num_forks == out.stats.num_merges >= 1
        ref = teacher_forced_logprobs(model, tok, target)
        n = len(out.prompt_token_ids)
        sampled = [i for i, lp in enumerate(out.logprobs) if lp is not None]
        forced = [i for i, lp in enumerate(out.logprobs) if lp is None]
        assert forced and sampled
        got = torch.tensor([out.logprobs[i] for i in sampled])
        want = torch.stack([ref[n + i - 1, target[n + i]] for i in sampled])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        critical = int(position_ids(target, tok).max()) + 1 - n
        assert out.stats.critical_path == critical
    assert lm.pool.num_used == 0


@pytest.mark.parametrize("prompts", [["The answer is", "Path Goal"], ["Question: what is 12 * 12? Answer:"]])
def test_greedy_equals_argmax_of_teacher_forced_forward(tok, model, prompts):
    lm = MultiverseLM(model, tok, check_integrity=True)
    outs = lm.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0, logprobs=True))
    for out in outs:
        ids = out.prompt_token_ids + out.token_ids
        ref = teacher_forced_logprobs(model, tok, ids)
        n = len(out.prompt_token_ids)
        for i, token in enumerate(out.token_ids):
            if out.logprobs[i] is not None:
                assert token == int(ref[n + i - 1].argmax())
                assert abs(out.logprobs[i] - float(ref[n + i - 1, token])) < 1e-4


def test_scripted_llama_family(tok):
    model = build_model(tok, family="llama", seed=5)
    rng = random.Random(7)
    p_ids = tok("Consider the triangle with sides 3, 4 and 5")["input_ids"]  # alone: the single-sequence path
    assert len(p_ids) > 3
    target = p_ids + encode_trace(random_trace(rng), tok) + [tok.eos_token_id]
    proc = ScriptedProcessor(target, len(p_ids), tok)
    lm = MultiverseLM(model, tok, check_integrity=True)
    out = lm.generate([p_ids], SamplingParams(temperature=0, logprobs=True, logits_processors=[proc]))[0]
    assert out.prompt_token_ids + out.token_ids == target
    ref = teacher_forced_logprobs(model, tok, target)
    for i, lp in enumerate(out.logprobs):
        if lp is not None:
            assert abs(lp - float(ref[len(p_ids) + i - 1, target[len(p_ids) + i]])) < 1e-4


@pytest.mark.parametrize("batch", [1, 3])
def test_prompt_holding_forked_blocks_is_prefilled_with_the_core_layout(tok, model, batch):
    """A multi-turn prompt with an earlier Multiverse answer: prefill uses the training mask and positions."""
    rng = random.Random(11)
    history = "Earlier: " + random_trace(rng) + " ok. Now:"
    p_ids = encode_trace(history, tok)
    target = p_ids + encode_trace(random_trace(rng), tok) + [tok.eos_token_id]
    proc = ScriptedProcessor(target, len(p_ids), tok)
    lm = MultiverseLM(model, tok, check_integrity=True)
    extra = ["x y z", "The answer is"][: batch - 1]
    outs = lm.generate([p_ids] + extra, [SamplingParams(temperature=0, logprobs=True, logits_processors=[proc])] + [SamplingParams(max_new_tokens=4)] * len(extra))
    out = outs[0]
    assert out.prompt_token_ids + out.token_ids == target and out.stats.num_forks >= 1
    ref = teacher_forced_logprobs(model, tok, target)
    n = len(p_ids)
    for i, lp in enumerate(out.logprobs):
        if lp is not None:
            assert abs(lp - float(ref[n + i - 1, target[n + i]])) < 1e-4
    assert out.stats.critical_path == int(position_ids(target, tok).max()) - int(position_ids(p_ids, tok)[-1])


def test_out_of_memory_finishes_stay_well_formed_and_exact(tok, model):
    """Every possible out-of-memory point (page_size 1: each token needs a page; pool sizes swept over the whole
    generation), including the `<Path>` of a sequential block inside a forked path: the final ids close each
    path exactly once, and the SPEC §5 invariant holds on what was generated."""
    from multiverse.attention import StructureRules
    from multiverse.tags import TagIds

    rules = StructureRules(True, 2, None)  # the inner 3-outline block runs sequentially inside path 1
    inner = "<Parallel><Goal><Outline>1.1: x</Outline><Outline>1.2: y</Outline><Outline>1.3: z</Outline></Goal>"
    inner += "<Path>1.1: so 12</Path><Path>1.2: then 7</Path><Path>1.3: is 4</Path><Conclusion>ok</Conclusion></Parallel>"
    body = "<Parallel><Goal>plan<Outline>1: a</Outline><Outline>2: b</Outline></Goal><Path>1: the sum" + inner
    body += " so</Path><Path>2: check x</Path><Conclusion>so 12</Conclusion></Parallel> done"
    p_ids = tok("Consider")["input_ids"]
    target = p_ids + encode_trace(body, tok) + [tok.eos_token_id]
    tags = TagIds.from_tokenizer(tok)
    ref = None
    reasons = set()
    for num_pages in range(len(p_ids) + 1, len(target) + 8):
        proc = ScriptedProcessor(target, len(p_ids), tok, rules)
        params = SamplingParams(temperature=0, logprobs=True, max_paths=2, logits_processors=[proc])
        lm = MultiverseLM(model, tok, page_size=1, num_pages=num_pages, reserve_pages=0, check_integrity=True)
        out = lm.generate([p_ids], params)[0]
        assert lm.pool.num_used == 0
        reasons.add(out.finish_reason)
        ids = out.prompt_token_ids + out.token_ids
        assert ids.count(tags.path_open) == ids.count(tags.path_close), (num_pages, ids)
        sampled = [i for i, lp in enumerate(out.logprobs) if lp is not None]
        if not sampled:
            continue
        mask = dense_mask(ids, tok, rules=rules)[None, None]
        pos = position_ids(ids, tok, rules=rules)[None]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=pos).logits[0]
        ref = torch.log_softmax(logits.float(), dim=-1)
        n = len(p_ids)
        got = torch.tensor([out.logprobs[i] for i in sampled])
        want = torch.stack([ref[n + i - 1, ids[n + i]] for i in sampled])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"num_pages={num_pages}")
    assert reasons == {"out_of_memory", "stop"} and ref is not None
