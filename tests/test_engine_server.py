"""The OpenAI-compatible server on 127.0.0.1 with a tiny model: completions, chat, streaming, errors."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from engine.api import MultiverseLM
from engine.server import start, stop
from multiverse.tiny import build_model


@pytest.fixture(scope="module")
def base_url(tok):
    lm = MultiverseLM(build_model(tok), tok, check_integrity=True)
    server, worker = start(lm, "127.0.0.1", 0, "tiny")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    stop(server, worker)
    assert lm.pool.num_used == 0


def test_completion_and_chat(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="none", timeout=60, max_retries=0)
    a = client.completions.create(model="tiny", prompt="The answer is", max_tokens=8, temperature=0, seed=1)
    b = client.completions.create(model="tiny", prompt="The answer is", max_tokens=8, temperature=0, seed=1)
    assert a.choices[0].text == b.choices[0].text and a.usage.completion_tokens == 8
    assert a.choices[0].finish_reason == "length"
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 5
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_streaming_concatenates_to_the_final_text(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="none", timeout=60, max_retries=0)
    whole = client.completions.create(model="tiny", prompt="Path", max_tokens=12, temperature=1.0, seed=5)
    parts = list(client.completions.create(model="tiny", prompt="Path", max_tokens=12, temperature=1.0, seed=5, stream=True))
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "length"


def test_bad_requests_name_the_field(base_url):
    for body, needle in [({"prompt": "x", "n": 2}, "n:"), ({"max_tokens": 3}, "prompt"), ({"prompt": "x", "temperature": -1}, "temperature")]:
        req = urllib.request.Request(f"{base_url}/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=30)
        assert exc.value.code == 400 and needle in json.loads(exc.value.read())["error"]["message"]
