"""`multiverse serve` on a real uvicorn server (127.0.0.1) with the shipped tiny model: API, streaming,
validation, disconnects, metrics, logging. One server for the module; every test is bounded."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import openai
import pytest

from engine.api import MultiverseLM
from multiverse.demo import DEFAULT_MODEL
from tests.server_support import (
    ANSWER, HEADERS, HTTP_TIMEOUT_S, KEY, QUESTION, post_raw, raw_request, sse_events, start, wait_until,
)


@pytest.fixture(scope="module")
def served(one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    server = start(lm, model_name="tiny", max_model_len=4096, api_key=KEY)  # 3000-token requests fit
    yield server
    server.stop()
    assert lm.pool.num_used == 0


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, timeout=HTTP_TIMEOUT_S, max_retries=0)


def post(served, path, body, timeout=HTTP_TIMEOUT_S):
    return httpx.post(served.url + path, json=body, headers=HEADERS, timeout=timeout)


def test_completion_chat_and_models(client):
    a = client.completions.create(model="tiny", prompt="Add each pair: 1+2.", max_tokens=6, temperature=0)
    b = client.completions.create(model="tiny", prompt="Add each pair: 1+2.", max_tokens=6, temperature=0)
    assert a.choices[0].text == b.choices[0].text and a.usage.completion_tokens == 6
    assert a.id != b.id and a.id.startswith("cmpl-")  # unique per request
    chat = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=600, temperature=0)
    extra = chat.model_extra["multiverse"]
    assert chat.id.startswith("chatcmpl-") and chat.choices[0].finish_reason == "stop"
    assert extra["raw_text"].endswith("<|im_end|>") and "<|im_end|>" not in chat.choices[0].message.content
    assert chat.choices[0].message.content.endswith(f"Answer: {ANSWER}") and extra["stats"]["num_forks"] == 1
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_stream_equals_the_final_text_and_ends_with_usage(served, client):
    whole = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=600, temperature=0)
    with httpx.stream("POST", served.url + "/v1/chat/completions", headers=HEADERS, timeout=HTTP_TIMEOUT_S, json={
        "model": "tiny", "messages": QUESTION, "max_tokens": 600, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }) as r:
        events = sse_events(r.iter_lines())
    chunks, done = events[:-1], events[-1]
    assert done == "[DONE]" and len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] != whole.id
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole.choices[0].message.content and len(chunks) > 20  # streamed piece by piece
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == whole.usage.completion_tokens
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["multiverse"]["stats"]["num_merges"] == 1


@pytest.mark.parametrize("stop", ["Answer", "Total", "B=3:6"])  # written by the root (a path would close)
def test_stop_strings_are_never_streamed_then_cut(served, stop):
    body = {"messages": QUESTION, "max_tokens": 600, "temperature": 0}
    uncut = post(served, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    body["stop"] = [stop]
    final = post(served, "/v1/chat/completions", body).json()
    with httpx.stream("POST", served.url + "/v1/chat/completions", headers=HEADERS, timeout=HTTP_TIMEOUT_S, json={**body, "stream": True}) as r:
        chunks = [e for e in sse_events(r.iter_lines()) if e != "[DONE]"]
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    content = final["choices"][0]["message"]["content"]
    # the root wrote the stop string: the final text ends before it, and the pieces add up to exactly that
    # text, so no piece ever carried characters that the cut removed (a stream cannot retract)
    assert final["multiverse"]["finish_reason"] == "stop" and uncut.startswith(content + stop)
    assert "".join(pieces) == content


BAD = [
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "top_k": 2**63}, "top_k"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [10**9]}, "prompt"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": "x", "frequency_penalty": 1}, "frequency_penalty"),
]


def test_bad_requests_get_400_naming_the_field_and_harm_no_neighbour(served):
    async def main():
        async with httpx.AsyncClient(base_url=served.url, headers=HEADERS, timeout=HTTP_TIMEOUT_S) as http:
            good = asyncio.create_task(http.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 600, "temperature": 0}))
            bad = [http.post("/v1/completions", json=body) for body, _ in BAD]
            bad.append(http.post("/v1/chat/completions", json={"messages": 5}))
            bad.append(http.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}))
            return await good, await asyncio.gather(*bad)

    good, bad = asyncio.run(main())
    for (body, field), r in zip(BAD + [({}, "messages"), ({}, "messages.0.role")], bad):
        error = r.json()["error"]
        assert r.status_code == 400 and error["message"].startswith(field) and error["type"] == "invalid_request_error", (body, error)
    assert good.status_code == 200 and good.json()["choices"][0]["finish_reason"] == "stop"
    assert httpx.get(served.url + "/health").json() == {"status": "ok"}


@pytest.mark.parametrize("data, needle", [
    (post_raw("/v1/completions", b'{"prompt": "x", "max_tokens": 1e400}'), b"max_tokens"),
    (post_raw("/v1/completions", b'{"prompt": "\xff\xfe"}'), b"JSON"),
    (post_raw("/v1/completions", b'{"prompt": '), b"JSON"),
    (post_raw("/v1/completions", b'[1, 2]'), b"JSON object"),
    (post_raw("/v1/completions", b'{"prompt": "x"}', "Content-Length: abc\r\n"), b""),
])
def test_malformed_bodies_get_a_400_not_a_closed_connection(served, data, needle):
    answer = raw_request(served.url, data)
    assert answer.startswith(b"HTTP/1.1 400") and needle in answer, answer[:300]


def test_unknown_model_unknown_route_and_context_length(served):
    r = post(served, "/v1/completions", {"model": "gpt-4", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert post(served, "/v1/nothing", {}).status_code == 404
    r = post(served, "/v1/completions", {"prompt": "1+1 " * 1200, "max_tokens": 2})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "4096" in message and "prompt has" in message and r.json()["error"]["code"] == "context_length_exceeded"


def test_api_key_is_required_on_the_api_only(served):
    assert httpx.post(served.url + "/v1/completions", json={"prompt": "x"}).status_code == 401
    wrong = httpx.post(served.url + "/generate", json={"text": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.get(served.url + "/health").status_code == 200 and httpx.get(served.url + "/metrics").status_code == 200


def test_disconnects_abort_and_free_the_kv_at_once(served):
    lm = served.state.lm
    # max_paths 1: a block the sampled text opens runs in order, so 3000 tokens take seconds, never a fork's fraction
    body = {"prompt": "Add each pair: 3+4.", "max_tokens": 3000, "ignore_eos": True, "temperature": 1.0, "max_paths": 1}

    async def main():
        async with httpx.AsyncClient(base_url=served.url, headers=HEADERS, timeout=HTTP_TIMEOUT_S) as http:
            async def stream_then_leave():
                async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                    async for _ in r.aiter_lines():
                        break  # read one line, then hang up
            async def wait_then_leave():
                with pytest.raises(httpx.TimeoutException):
                    await http.post("/v1/completions", json=body, timeout=1.0)
                with pytest.raises(httpx.TimeoutException):
                    await http.post("/generate", json={"text": "x", "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True}}, timeout=1.0)
            await asyncio.gather(*[stream_then_leave() for _ in range(4)], wait_then_leave())

    before = _metric(served, "multiverse_aborts_total")
    asyncio.run(main())
    # 3000 tokens each would take minutes; aborted, every page is back within moments
    assert wait_until(lambda: lm.pool.num_used == 0 and not lm.has_work())
    assert _metric(served, "multiverse_aborts_total") - before == 6


def test_192_concurrent_streams_get_no_connection_reset(served):
    async def one(http):
        async with http.stream("POST", "/v1/completions", json={"prompt": "Add", "max_tokens": 2, "stream": True}) as r:
            return r.status_code, [line async for line in r.aiter_lines() if line][-1]

    async def main():
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=served.url, headers=HEADERS, timeout=HTTP_TIMEOUT_S, limits=limits) as http:
            return await asyncio.gather(*[one(http) for _ in range(192)], return_exceptions=True)

    results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert all(status == 200 and last == "data: [DONE]" for status, last in results)


def test_metrics_and_one_log_line_per_request(served, caplog):
    with caplog.at_level(logging.INFO, logger="multiverse.serve"):
        r = post(served, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 600, "temperature": 0})
        post(served, "/v1/completions", {"prompt": "x", "seed": "abc"})
        for _ in range(200):  # the log line is written once the response has gone out: wait for it (bounded, 2 s)
            lines = [rec.getMessage() for rec in caplog.records if rec.name == "multiverse.serve"]
            if any("/v1/completions 400" in line for line in lines):
                break
            time.sleep(0.01)
    rid = r.json()["id"]
    mine = [line for line in lines if line.startswith(rid)]
    assert len(mine) == 1 and " 200 " in mine[0] and f"completion_tokens={r.json()['usage']['completion_tokens']}" in mine[0]
    assert any("/v1/completions 400" in line for line in lines)
    text = httpx.get(served.url + "/metrics").text
    for name in ("multiverse_http_requests_total", "multiverse_requests_running", "multiverse_requests_waiting",
                 "multiverse_kv_pages_used", "multiverse_prompt_tokens_total", "multiverse_generation_tokens_total",
                 "multiverse_time_to_first_token_seconds_bucket", "multiverse_aborts_total"):
        assert name in text, name
    assert _metric(served, "multiverse_forks_total") >= 1 and _metric(served, "multiverse_merges_total") >= 1
    assert 'route="/v1/completions",status="400"' in text


def _metric(served, name):
    for line in httpx.get(served.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
