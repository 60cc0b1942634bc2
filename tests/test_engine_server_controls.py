"""The decoding controls through `multiverse serve` (real uvicorn on 127.0.0.1, the shipped tiny model): the
`multiverse` object of a request body is typed (a misspelt or bad control is a 400 naming it), reaches the
engine, and the answer reports the fork acceptance rate and each branch's entropy."""
from __future__ import annotations

import httpx
import pytest

from engine.api import MultiverseLM
from multiverse.demo import DEFAULT_MODEL
from tests.server_support import HEADERS, KEY, QUESTION, start


@pytest.fixture(scope="module")
def served(one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    server = start(lm, model_name="tiny", max_model_len=4096, api_key=KEY)
    yield server
    server.stop()
    assert lm.pool.num_used == 0


def chat(served, **extra):
    body = {"messages": QUESTION, "max_tokens": 600, "temperature": 0, **extra}
    return httpx.post(served.url + "/v1/chat/completions", json=body, headers=HEADERS, timeout=60)


@pytest.mark.parametrize(("options", "field"), [
    ({"fork_threshold": 2}, "multiverse.fork_threshold"),
    ({"fork_treshold": 0.9}, "multiverse.fork_treshold"),
    ({"structure": "strict"}, "multiverse.structure"),
    ({"max_concurrent_paths": 0}, "multiverse.max_concurrent_paths"),
    ({"path_rule": "factor"}, "SamplingParams.path_factor"),
])
def test_bad_controls_get_a_400_naming_them(served, options, field):
    r = chat(served, multiverse=options)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(field), r.text


def test_controls_reach_the_engine_and_are_reported(served):
    free = chat(served).json()["multiverse"]
    assert free["stats"]["num_forks"] == 1 and free["stats"]["fork_acceptance_rate"] == 1.0
    assert all(b["mean_entropy"] is not None and b["max_entropy"] >= b["mean_entropy"] for b in free["tree"])
    # a bias that makes <Parallel> impossible: the model answers without forking, nothing proposed
    never = chat(served, multiverse={"fork_bias": -1e4}).json()["multiverse"]
    assert never["stats"]["num_forks"] == 0 and never["stats"]["fork_proposals"] == 0
    assert never["stats"]["fork_acceptance_rate"] is None
