"""The decoding controls through the SGLang client (`backend="sglang"`), against `multiverse serve`'s SGLang-native
`/generate` on loopback (it honours SGLang's `logit_bias` and `ebnf` keys), beside the native engine, shipped model:

- the path cap writes the uncapped tokens and fewer paths sample at once;
- fork_bias (SGLang's logit_bias) and fork_threshold at temperature 0 write native's tokens, with native's
  fork acceptance; the bias and the gate change the output, so ignoring them would fail;
- structure="constrained" (each call's `ebnf`, engine/grammar.py): greedy = native's tokens, and no invalid
  structure at temperature 1.5 on off-task prompts, where the free runs break it;
- what stays native-only is refused by name.
"""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_support import start  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.evaluation.analysis import continuation_validity  # noqa: E402
from multiverse.evaluation.grading import special_tokens  # noqa: E402
from multiverse.evaluation.protocol import EvalConfig  # noqa: E402
from multiverse.evaluation.runner import build_prompt  # noqa: E402
from multiverse.evaluation.tasks import load_task  # noqa: E402

pytest.importorskip("xgrammar")
pytestmark = pytest.mark.usefixtures("one_thread")
OFF_TASK = ["Write a poem about the sea.", "asdf qwer zxcv", "<Path>", "1: 2: 3:", "</Parallel></Goal>", "<Parallel><Goal>"]


@pytest.fixture(scope="module")
def both():
    native = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    server = start(MultiverseLM(str(DEFAULT_MODEL)), model_name="tiny")
    client = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=server.url, call_tokens=64)
    yield native, client
    client.close()
    server.stop()


@pytest.fixture(scope="module")
def questions(both):
    tok = both[0].tokenizer
    return [build_prompt(p, EvalConfig(), tok) for p in load_task("remainders", limit=3)]


def greedy(**kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=600, **kw)


def test_path_cap_writes_the_uncapped_tokens(both, questions):
    native, client = both
    free = native.generate(questions[:2], greedy())
    for params in (greedy(max_concurrent_paths=1), greedy(path_rule="factor", path_factor=0.002)):
        capped, native_capped = client.generate(questions[:2], params), native.generate(questions[:2], params)
        assert [o.token_ids for o in capped] == [o.token_ids for o in free]
        assert all(o.stats.num_forks >= 1 for o in capped)
        # the same schedule as native's (the factor rule reads the outlines' logprobs from the server)
        assert [o.stats.peak_paths for o in capped] == [o.stats.peak_paths for o in native_capped]
        if params.max_concurrent_paths == 1:
            assert max(o.stats.peak_paths for o in capped) < max(o.stats.peak_paths for o in free)


@pytest.mark.parametrize("control", [{"fork_bias": -14.0}, {"fork_threshold": 0.99998}])
def test_fork_controls_write_native_tokens(both, questions, control):
    native, client = both
    want, got = native.generate(questions, greedy(**control)), client.generate(questions, greedy(**control))
    for a, b in zip(want, got):
        assert b.token_ids == a.token_ids and b.finish_reason == a.finish_reason
        assert (b.stats.num_forks, b.stats.fork_acceptance_rate) == (a.stats.num_forks, a.stats.fork_acceptance_rate)
    plain = native.generate(questions, greedy())
    assert [o.token_ids for o in plain] != [o.token_ids for o in want]  # the control matters on these questions


def test_constrained_greedy_is_native_and_sampling_stays_valid(both, questions):
    native, client = both
    params = greedy(structure="constrained")
    assert [o.token_ids for o in client.generate(questions[:2], params)] == [o.token_ids for o in native.generate(questions[:2], params)]
    tok, specials = client.tokenizer, special_tokens(client.tokenizer)
    prompts = OFF_TASK

    def invalid(structure: str) -> int:
        outs = client.generate(prompts, [SamplingParams(max_new_tokens=150, temperature=1.5, seed=i, structure=structure)
                                         for i in range(len(prompts))])
        return sum(not continuation_validity(tok.decode(o.prompt_token_ids, skip_special_tokens=False), o.raw_text,
                                             specials).valid for o in outs)

    assert invalid("constrained") == 0
    assert invalid("free") >= 1  # the same prompts break the structure without the grammar


def test_native_only_controls_are_refused_by_name(both):
    _, client = both
    for params, words in [(SamplingParams(merge="refresh"), "merge='refresh' runs in the native engine only"),
                          (SamplingParams(fork_threshold=0.9, temperature=0.7), "fork_threshold with temperature > 0"),
                          (SamplingParams(structure="constrained", ignore_eos=True), "drop ignore_eos")]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            client.generate(["x"], params)


def test_generate_names_a_bad_grammar_or_bias(both):
    _, client = both
    url = client.backend.wire.url + "/generate"
    for sampling, words in [({"ebnf": "root ::= Token(-3)"}, "ebnf: xgrammar cannot compile it"),
                            ({"logit_bias": {"abc": 1.0}}, "logit_bias: key 'abc' is not a token id"),
                            ({"logit_bias": {"99999": 1.0}}, "logit_bias: key '99999' is not a token id")]:
        reply = httpx.post(url, json={"input_ids": [5, 6], "sampling_params": {"max_new_tokens": 2, **sampling}}, timeout=60)
        assert reply.status_code == 400 and words in reply.json()["error"]["message"], reply.text
    forced = {"max_new_tokens": 3, "temperature": 0, "ebnf": "root ::= Token(296) Token(298) Token(300)"}
    reply = httpx.post(url, json={"input_ids": [5, 6], "sampling_params": forced}, timeout=60)
    assert reply.json()["output_ids"] == [296, 298, 300]  # the grammar, not the model, chose these
