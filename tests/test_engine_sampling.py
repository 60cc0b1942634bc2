"""Sampling, seeds, stops, logprobs, processors, limits and batch invariance of the engine."""
from __future__ import annotations

import random

import pytest
import torch

from engine.api import MultiverseLM
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import StructureRules, position_ids
from multiverse.encode import encode_trace
from multiverse.tiny import build_model
from tests.test_engine_invariant import random_trace

TRACE = (
    "<Parallel><Goal>plan<Outline>1: sum</Outline><Outline>2: check</Outline></Goal>"
    "<Path>1: the sum is 4</Path><Path>2: check x</Path><Conclusion>so 12</Conclusion></Parallel> done"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=64, num_layers=2, seed=1)


@pytest.fixture(scope="module")
def lm(model, tok):
    return MultiverseLM(model, tok, check_integrity=True, page_size=8)


def scripted(tok, prompt: str, body: str, **kw) -> tuple[list[int], SamplingParams]:
    p_ids = tok(prompt)["input_ids"]
    target = p_ids + encode_trace(body, tok) + [tok.eos_token_id]
    rules = StructureRules(kw.pop("parallel", True), kw.get("max_paths"), kw.get("max_depth"))
    proc = ScriptedProcessor(target, len(p_ids), tok, rules)
    return p_ids, SamplingParams(temperature=0, logprobs=True, logits_processors=[proc], **kw)


def test_same_request_alone_and_in_a_batch_of_16(lm, tok):
    target = SamplingParams(max_new_tokens=40, temperature=0.8, top_p=0.95, seed=7, logprobs=True, ignore_eos=True)
    alone = lm.generate(["The answer is"], target)[0]
    rng = random.Random(0)
    prompts = [rng.choice(["Let's think", "x", "Question: what is 12 * 12? Answer:", "Path"]) * rng.randint(1, 4) for _ in range(16)]
    params = [SamplingParams(max_new_tokens=rng.randint(5, 60), temperature=rng.choice([0, 1.0]), seed=i) for i in range(16)]
    p_ids, fork_params = scripted(tok, "Consider", TRACE)
    outs = lm.generate(prompts[:8] + ["The answer is"] + [p_ids] + prompts[8:], params[:8] + [target, fork_params] + params[8:])
    batched = outs[8]
    assert batched.token_ids == alone.token_ids
    torch.testing.assert_close(torch.tensor(batched.logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=0)
    assert outs[9].stats.num_forks == 1


def test_same_seed_same_output_other_seed_differs(lm):
    p = SamplingParams(max_new_tokens=30, temperature=1.0, seed=123, ignore_eos=True)
    a, b = lm.generate(["Let's think", "Let's think"], [p, p])
    c = lm.generate(["Let's think"], p)[0]
    d = lm.generate(["Let's think"], SamplingParams(max_new_tokens=30, temperature=1.0, seed=124, ignore_eos=True))[0]
    assert a.token_ids == b.token_ids == c.token_ids
    assert d.token_ids != a.token_ids


def test_top_k_one_and_tiny_top_p_are_greedy(lm):
    greedy = lm.generate(["Path Goal"], SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True))[0]
    k1 = lm.generate(["Path Goal"], SamplingParams(max_new_tokens=20, temperature=1.5, top_k=1, seed=3, ignore_eos=True))[0]
    p0 = lm.generate(["Path Goal"], SamplingParams(max_new_tokens=20, temperature=1.5, top_p=1e-6, seed=4, ignore_eos=True))[0]
    assert greedy.token_ids == k1.token_ids == p0.token_ids


def test_stop_string_across_tokens_and_stop_ids(lm, tok):
    p = SamplingParams(max_new_tokens=40, temperature=1.0, seed=9, ignore_eos=True)
    full = lm.generate(["Answer:"], p)[0]
    pieces = [tok.decode([t]) for t in full.token_ids]
    k = next(i for i in range(5, len(pieces)) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[k][-1] + pieces[k + 1][:1]  # spans the boundary between two tokens
    first = full.text.find(stop)
    cut = lm.generate(["Answer:"], SamplingParams(max_new_tokens=40, temperature=1.0, seed=9, ignore_eos=True, stop=[stop]))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:first]
    assert full.token_ids[: len(cut.token_ids)] == cut.token_ids
    kept = lm.generate(["Answer:"], SamplingParams(max_new_tokens=40, temperature=1.0, seed=9, ignore_eos=True, stop=[stop], include_stop_str_in_output=True))[0]
    assert kept.text == full.text[: first + len(stop)]
    by_id = lm.generate(["Answer:"], SamplingParams(max_new_tokens=40, temperature=1.0, seed=9, ignore_eos=True, stop_token_ids=[full.token_ids[6]]))[0]
    assert by_id.finish_reason == "stop" and by_id.token_ids == full.token_ids[: full.token_ids.index(full.token_ids[6]) + 1]


def test_processor_sees_visible_ids_and_logprobs_are_unmodified(lm, tok):
    seen: list[list[int]] = []

    def ban_first(visible: list[int], logits: torch.Tensor) -> torch.Tensor:
        seen.append(list(visible))
        logits = logits.clone()
        logits[int(logits.argmax())] = float("-inf")  # force the runner-up
        return logits

    prompt = tok("The answer is")["input_ids"]
    out = lm.generate([prompt], SamplingParams(max_new_tokens=5, temperature=0, logprobs=True, logits_processors=[ban_first], ignore_eos=True))[0]
    assert seen[0] == prompt and seen[1] == prompt + out.token_ids[:1]
    plain = lm.generate([prompt], SamplingParams(max_new_tokens=1, temperature=0, logprobs=True, ignore_eos=True))[0]
    assert out.token_ids[0] != plain.token_ids[0]
    assert out.logprobs[0] < plain.logprobs[0]  # the runner-up under the unmodified distribution


def test_chat_messages_use_the_template(lm, tok):
    msgs = [{"role": "user", "content": "What is 12 * 12?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    out = lm.generate([msgs], SamplingParams(max_new_tokens=3, temperature=0))[0]
    assert out.prompt_token_ids == tok(text, add_special_tokens=False)["input_ids"]


def test_parallel_false_never_forks(model, tok):
    seq = MultiverseLM(model, tok, parallel=False, check_integrity=True)
    p_ids, params = scripted(tok, "Consider", TRACE, parallel=False)
    out = seq.generate([p_ids], params)[0]
    assert out.stats.num_forks == 0 and out.stats.fallbacks == ["disabled"]
    assert out.stats.critical_path == out.stats.generated_tokens == len(out.token_ids)
    assert position_ids(p_ids + out.token_ids, tok, rules=StructureRules(parallel=False)).tolist() == list(range(len(p_ids) + len(out.token_ids)))


def test_limits_fall_back_to_sequential_and_budgets_close_paths(lm, tok):
    p_ids, params = scripted(tok, "Consider", TRACE, max_paths=1)
    out = lm.generate([p_ids], params)[0]
    assert out.stats.num_forks == 0 and out.stats.fallbacks == ["too_many_paths"]
    nested = "<Parallel><Goal><Outline>1: a</Outline></Goal><Path>1: " + random_trace(random.Random(1), 1, "1.") + "</Path><Conclusion>c</Conclusion></Parallel>"
    p_ids, params = scripted(tok, "Consider", nested, max_depth=1)
    out = lm.generate([p_ids], params)[0]
    assert out.stats.num_forks == 1 and set(out.stats.fallbacks) == {"too_deep"}
    p_ids, params = scripted(tok, "Consider", TRACE, max_new_tokens=20)
    out = lm.generate([p_ids], params)[0]
    assert out.finish_reason == "length" and out.stats.generated_tokens == 20
    paths = [b for b in out.tree if b.label]
    assert paths and all(b.finish_reason == "length" for b in paths) and out.token_ids[-1] == tok.convert_tokens_to_ids("</Path>")
    p_ids, params = scripted(tok, "Consider", TRACE, max_critical_tokens=25)
    out = lm.generate([p_ids], params)[0]
    assert out.finish_reason == "critical_length" and out.stats.critical_path == 25


def test_eos_inside_a_path_closes_only_that_path(lm, tok):
    body = TRACE.replace("the sum is 4", "the sum<|endoftext|>")
    p_ids = tok("Consider")["input_ids"]
    target = p_ids + encode_trace(body, tok)
    eos_at = target.index(tok.eos_token_id)
    target = target[:eos_at] + [tok.eos_token_id] + target[eos_at + 1 :] + [tok.eos_token_id]
    proc = ScriptedProcessor(target, len(p_ids), tok)
    out = lm.generate([p_ids], SamplingParams(temperature=0, logits_processors=[proc]))[0]
    branch = {b.label: b for b in out.tree}
    assert branch["1"].finish_reason == "eos" and branch["2"].finish_reason == "path_end"
    assert out.stats.num_merges == 1 and tok.eos_token_id not in out.token_ids[:-1]


def test_memory_limits_end_requests_cleanly(model, tok):
    small = MultiverseLM(model, tok, check_integrity=True, page_size=4, num_pages=6, reserve_pages=1)
    long_prompt = list(range(40, 80))  # 40 tokens: 10 pages, more than the pool: refused before anything runs
    params = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True)
    with pytest.raises(ValueError, match=r"request 0: prompt: 40 tokens can never fit .* holds 20 tokens per request"):
        small.generate([long_prompt, "x"], params)
    assert not small.has_work()
    (b,) = small.generate(["x"], params)  # fits at first, then runs out of pages while decoding
    assert b.finish_reason == "out_of_memory" and 0 < len(b.token_ids) < 40
    assert small.pool.num_used == 0


def test_bad_input_is_named(model, tok, lm):
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(TypeError, match="num_slots"):
        MultiverseLM(model, tok, num_slots=3)
    with pytest.raises(ValueError, match=r"request 0: prompt\[0\]: token id 1000000 is not in the vocabulary"):
        lm.generate([[10**6]])
    with pytest.raises(ValueError, match="2 sampling params for 3 prompts"):
        lm.generate(["a", "b", "c"], [SamplingParams(), SamplingParams()])


def test_draw_follows_the_distribution_and_its_cuts():
    from collections import Counter

    from engine.sampling import _draw

    row = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0]))  # last token impossible
    gen = torch.Generator().manual_seed(0)
    n = 3000

    def counts(**kw) -> Counter:
        p = SamplingParams(temperature=1.0, **kw)
        return Counter(_draw([row] * n, [p] * n, torch.rand(n, generator=gen)).tolist())

    plain = counts()
    assert 3 not in plain and all(abs(plain[i] / n - q) < 0.04 for i, q in enumerate([0.5, 0.3, 0.2]))
    nucleus = counts(top_p=0.6)  # 0.5 + 0.3 reach 0.6: token 2 is cut
    assert set(nucleus) == {0, 1} and abs(nucleus[0] / n - 0.5 / 0.8) < 0.04
    assert set(counts(top_k=1)) == {0}
    assert set(counts(top_k=2)) == {0, 1}
