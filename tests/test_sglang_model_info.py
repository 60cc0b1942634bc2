"""The SGLang client without a model path (CI, against `multiverse serve`'s `/generate` and `/model_info`).

`multiverse serve` names its model in `/model_info` (and SGLang's older `/get_model_info`) as SGLang does; a
client given only the url loads the tokenizer and the generation config from there, so it stops where the
native engine stops: the shipped model ends its answers with `<|im_end|>`, an end-of-sequence id only its
generation config names (a client stopping on the tokenizer's `<|endoftext|>` alone would write past it).
"""
from __future__ import annotations

import httpx
import pytest

from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.demo import DEFAULT_MODEL
from multiverse.demo.remainders import held_out_rows
from tests.server_support import start

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def native():
    return MultiverseLM(str(DEFAULT_MODEL))


@pytest.fixture(scope="module")
def server(native):
    served = start(MultiverseLM(str(DEFAULT_MODEL)), model_name="tiny", model_path=str(DEFAULT_MODEL))
    yield served
    served.stop()


def test_the_server_names_its_model_as_sglang_does(server):
    for route in ("/model_info", "/get_model_info"):
        info = httpx.get(server.url + route, timeout=10).json()
        assert info["model_path"] == info["tokenizer_path"] == str(DEFAULT_MODEL) and info["is_generation"] is True


def test_a_client_without_a_path_stops_where_native_stops(server, native):
    client = MultiverseLM(backend="sglang", url=server.url)
    try:
        assert client.scheduler.eos_ids == native.scheduler.eos_ids != {native.tokenizer.eos_token_id}
        prompts = [[{"role": "user", "content": row["question"]}] for row in held_out_rows(5)]
        params = SamplingParams(temperature=0, max_new_tokens=800)
        want, got = native.generate(prompts, params), client.generate(prompts, params)
    finally:
        client.close()
    im_end = native.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert sum(a.token_ids[-1] == im_end for a in want) >= 3  # the case the tokenizer's eos alone gets wrong
    assert [b.token_ids for b in got] == [a.token_ids for a in want]
    assert [b.text for b in got] == [a.text for a in want] and all(b.stats.num_forks >= 1 for b in got)


def test_a_named_path_the_client_cannot_read_is_an_error(tmp_path, native):
    from engine.native import NativeEngine

    lost = tmp_path / "elsewhere"
    served = start(NativeEngine(native.model, native.tokenizer), model_name="tiny", model_path=str(lost))
    try:
        with pytest.raises(ValueError, match="cannot load the tokenizer from .*elsewhere"):
            MultiverseLM(backend="sglang", url=served.url)
        with pytest.raises(ValueError, match="cannot read a generation config .*elsewhere.*pass model= a local copy"):
            MultiverseLM(tokenizer=native.tokenizer, backend="sglang", url=served.url)
    finally:
        served.stop()
