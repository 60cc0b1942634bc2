"""SGLang's native /generate on `multiverse serve`: field shapes of SGLang 0.5.23, batches, stops, validation,
and exact Multiverse semantics for a client that drives fork/merge itself with token ids."""
from __future__ import annotations

import httpx
import pytest

from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.demo import DEFAULT_MODEL
from tests.server_support import HEADERS, HTTP_TIMEOUT_S, KEY, QUESTION, start


@pytest.fixture(scope="module")
def served(one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    server = start(lm, model_name="tiny", api_key=KEY)
    yield server
    server.stop()
    assert lm.pool.num_used == 0


def generate(served, body):
    return httpx.post(served.url + "/generate", json=body, headers=HEADERS, timeout=HTTP_TIMEOUT_S)


def question_ids(served):
    return served.state.lm.encode_prompt(QUESTION)


def test_single_and_batch_shapes(served):
    ids = question_ids(served)
    one = generate(served, {"input_ids": ids, "sampling_params": {"max_new_tokens": 5, "temperature": 0}, "return_logprob": True}).json()
    meta = one["meta_info"]
    assert len(one["output_ids"]) == 5 and meta["completion_tokens"] == 5 and meta["prompt_tokens"] == len(ids)
    assert meta["finish_reason"] == {"type": "length", "length": 5} and meta["cached_tokens"] == 0
    assert [t for _, t, _ in meta["output_token_logprobs"]] == one["output_ids"]
    assert all(lp < 0 and text is None for lp, _, text in meta["output_token_logprobs"])
    batch = generate(served, {"input_ids": [ids, ids[:-3]], "rid": ["a", "b"],
                              "sampling_params": [{"max_new_tokens": 5, "temperature": 0}, {"max_new_tokens": 2}]}).json()
    assert isinstance(batch, list) and [b["meta_info"]["id"] for b in batch] == ["a", "b"]
    assert batch[0]["output_ids"] == one["output_ids"] and len(batch[1]["output_ids"]) == 2
    assert "output_token_logprobs" not in batch[0]["meta_info"]
    text = generate(served, {"text": "Add each pair: 1+2.", "sampling_params": {"max_new_tokens": 3}}).json()
    assert text["meta_info"]["prompt_tokens"] == len(served.state.lm.tokenizer("Add each pair: 1+2.")["input_ids"])


def test_stop_token_is_in_output_ids_and_trimmed_from_text(served):
    ids = question_ids(served)
    free = generate(served, {"input_ids": ids, "sampling_params": {"max_new_tokens": 8, "temperature": 0}}).json()
    stop_id = free["output_ids"][4]
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 8, "temperature": 0, "stop_token_ids": [stop_id],
                                                   "skip_special_tokens": False}}
    cut = generate(served, body).json()
    upto = free["output_ids"][: free["output_ids"].index(stop_id) + 1]
    assert cut["output_ids"] == upto and cut["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop_id}
    tok = served.state.lm.tokenizer
    assert cut["text"] == tok.decode(upto[:-1], skip_special_tokens=False)
    body["sampling_params"]["no_stop_trim"] = True
    assert generate(served, body).json()["text"] == tok.decode(upto, skip_special_tokens=False)


@pytest.mark.parametrize("body, needle", [
    ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 2, "beam_width": 3}}, "sampling_params.beam_width"),
    ({"input_ids": [1, 2], "sampling_params": {"top_k": 0}}, "top_k"),
    ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0}}, "max_new_tokens"),
    ({"input_ids": [1, 2], "sampling_params": {"frequency_penalty": 0.5}}, "frequency_penalty"),
    ({"input_ids": [1, 2], "text": "x"}, "exactly one of text or input_ids"),
    ({}, "exactly one of text or input_ids"),
    ({"input_ids": [[1, 2], [3]], "sampling_params": [{}]}, "sampling_params"),
    ({"input_ids": [[1, 2], [3, 10**6]]}, "input_ids[1]"),
    ({"input_ids": [1, 2], "stream": True}, "stream"),
])
def test_bad_generate_requests_name_the_field(served, body, needle):
    r = generate(served, body)
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_generate_decodes_sequentially_like_the_native_sequential_engine(served):
    """SGLang never forks inside a request: the client does. So /generate writes </Goal> and goes on as text."""
    ids = question_ids(served)
    out = generate(served, {"input_ids": ids, "sampling_params": {"max_new_tokens": 120, "temperature": 0}}).json()
    lm = served.state.lm
    sequential = MultiverseLM(lm.model, lm.tokenizer, parallel=False)
    want = sequential.generate([ids], SamplingParams(max_new_tokens=120, temperature=0))[0]
    assert out["output_ids"] == want.token_ids
    goal_close = lm.vocab.tags.goal_close
    assert goal_close in out["output_ids"]  # the model opened a block, and nothing forked it


def test_a_client_driven_merge_is_exact(served):
    """Prompt = question + prefix + path 1 + path 2 + <Conclusion> (the ids the native engine produced):
    /generate lays it out with the core's positions and mask, so it continues exactly as the native engine did
    after its own merge."""
    lm = served.state.lm
    ids = question_ids(served)
    native = MultiverseLM(lm.model, lm.tokenizer).generate([ids], SamplingParams(max_new_tokens=600, temperature=0))[0]
    assert native.stats.num_merges == 1
    at = native.token_ids.index(lm.vocab.tags.conclusion_open) + 1
    prompt, rest = ids + native.token_ids[:at], native.token_ids[at:]
    out = generate(served, {"input_ids": prompt, "sampling_params": {"max_new_tokens": len(rest), "temperature": 0}}).json()
    assert out["output_ids"] == rest and out["meta_info"]["prompt_tokens"] == len(prompt)
