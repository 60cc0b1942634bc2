"""Routes of the OpenAI-compatible API: thin (validate, prepare, hand to the engine client, answer).

Tokenizing and building a whole answer run on the worker threads (offload.py); the front door (frontdoor.py)
has capped the body and the requests in flight before a route runs. Disconnects abort: a stream's generator is cancelled when its client goes away, a plain request waits for
its result and for `http.disconnect` at once (waiting.py); either way `handle.close()` runs in a `finally`.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from engine.server import openai_format as fmt
from engine.server.engine_client import Delta, Done, Failed, JobHandle
from engine.server.errors import error_body, error_response
from engine.server.prepare import check_model, critical_cap, encode, sampling_params
from engine.server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from engine.server.streaming import TextStream
from engine.server.waiting import wait_all_or_disconnect

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    state = request.app.state.mv
    card = {"id": state.config.model_name, "object": "model", "created": state.started, "owned_by": "multiverse",
            "max_model_len": state.config.max_model_len}
    return {"object": "list", "data": [card]}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    return await _serve(request, body, chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    return await _serve(request, body, chat=True)


async def _serve(request: Request, body: SamplingFields, chat: bool) -> Any:
    state = request.app.state.mv
    check_model(body.model, state.config)
    param = "messages" if chat else "prompt"
    prompt = [m.as_template_input() for m in body.messages] if chat else body.prompt
    ids = await state.offload.run(request, encode, state.lm, prompt, param, state.config, state.limits.prompt_chars)
    budget = body.token_budget if chat else body.max_tokens
    params = sampling_params(
        max_new_tokens=budget if budget is not None else state.config.default_max_tokens,
        max_critical_tokens=critical_cap(ids, state.config, body.max_critical_tokens),
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=max(0, body.top_k or 0),
        seed=body.seed,
        stop=body.stop_list,
        stop_token_ids=tuple(body.stop_token_ids or ()),
        ignore_eos=body.ignore_eos,
        include_stop_str_in_output=body.include_stop_str_in_output,
        logprobs=body.logprobs if chat else body.logprobs is not None,
        max_paths=body.max_paths,
        max_depth=body.max_depth,
        **body.multiverse.model_dump(),
    )
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    request.state.log = {"id": rid, "prompt_tokens": len(ids), "completion_tokens": 0}
    handle = state.client.submit(ids, params)
    reply = _Reply(state, body, rid, chat, request)
    if body.stream:
        # the generator closes the handle when it ends or is cancelled; the background task covers a client that
        # left before the generator ever started (an unstarted generator has no finally to run)
        return StreamingResponse(reply.stream(handle), media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                 background=BackgroundTask(handle.close))
    results = await wait_all_or_disconnect([handle], request)
    if results is None:  # the client went away (its job was aborted); nobody reads this answer
        return JSONResponse({}, status_code=499)
    return await state.offload.run(None, reply.whole, results[0])  # decoding logprobs is CPU work too


class _Reply:
    """Turns one job's updates into the OpenAI body (whole) or SSE chunks (stream)."""

    def __init__(self, state: Any, body: SamplingFields, rid: str, chat: bool, request: Request) -> None:
        self.state, self.body, self.rid, self.chat, self.request = state, body, rid, chat, request
        self.created, self.model = int(time.time()), state.config.model_name

    def _texts(self, done: Done) -> tuple[str, str]:
        """(content, raw): content drops special tokens such as <|im_end|> (structure tags stay) unless the
        request set skip_special_tokens: false; raw keeps everything. Both end at the stop string."""
        out = done.output
        return (out.text if self.body.skip_special_tokens else out.raw_text), out.raw_text

    def whole(self, result: Done | Failed) -> JSONResponse:
        if isinstance(result, Failed):
            return error_response(result.status, result.message)
        out = result.output
        if out.finish_reason == "error":
            return error_response(500, _failure(out))
        self.request.state.log["completion_tokens"] = len(out.token_ids)
        text, raw = self._texts(result)
        lp = fmt.logprobs(out, self.state.lm.tokenizer, self.chat)
        body = fmt.response(self.rid, self.created, self.model, self.chat, text, out, fmt.extension(out, raw), lp)
        return JSONResponse(body)

    async def stream(self, handle: JobHandle) -> AsyncIterator[str]:
        text = TextStream(self.state.lm.codec, handle.holdback, not self.body.skip_special_tokens)
        usage, ended = self.body.include_usage, False
        try:
            if self.chat:
                yield _sse(self._chunk(None, role=True), usage)
            async for update in handle:
                if isinstance(update, Delta):
                    self.request.state.log["completion_tokens"] += len(update.ids)
                    if piece := text.feed(update.ids):
                        yield _sse(self._chunk(piece), usage)
                elif isinstance(update, Failed) or update.output.finish_reason == "error":
                    message = update.message if isinstance(update, Failed) else _failure(update.output)
                    self.request.state.log["status"] = update.status if isinstance(update, Failed) else 500
                    yield _sse(error_body(self.request.state.log["status"], message), False)
                else:
                    yield self._last(update, text, usage)
                    if usage:
                        yield _sse(fmt.usage_chunk(self.rid, self.created, self.model, self.chat, update.output), False)
            yield "data: [DONE]\n\n"
            ended = True
        finally:
            if not ended:  # the client went away (or shutdown cut it): this generator was cancelled
                self.request.state.log["status"] = 499
            handle.close()  # ... and its request is aborted here, its KV freed at once

    def _last(self, done: Done, text: TextStream, usage: bool) -> str:
        """The last content chunk: the rest of the final text, the finish reason and the extension."""
        out = done.output
        self.request.state.log["completion_tokens"] = len(out.token_ids)
        clean, raw = self._texts(done)
        last = self._chunk(text.finish(clean), fmt.finish_reason(out))
        last["multiverse"] = fmt.extension(out, raw)
        return _sse(last, usage)

    def _chunk(self, piece: str | None, reason: str | None = None, role: bool = False) -> dict[str, Any]:
        return fmt.chunk(self.rid, self.created, self.model, self.chat, piece, reason, role)


def _failure(out: Any) -> str:
    return f"the engine failed this request: {out.error or 'unknown error'}"


def _sse(obj: dict[str, Any], with_usage: bool) -> str:
    if with_usage and "usage" not in obj:
        obj["usage"] = None
    return f"data: {json.dumps(obj)}\n\n"
