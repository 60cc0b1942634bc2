"""SGLang's native `/generate` on the native engine: token ids in, token ids out (one input or a batch).

Decoding is sequential in the generated part (SGLang never forks inside a request; a Multiverse client forks
and merges itself with token ids), while the prompt is laid out with the core's positions and mask when it
holds complete forked blocks, so a merge sent as prefix + path 1 + ... + path n is exact.

`meta_info.cached_tokens` means what it means in SGLang: prompt tokens served from a prefix cache. The native
engine has no cross-request cache, so it is 0: every prompt is prefilled (exactly, never approximately).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import fields
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.params import SamplingParams
from engine.server.engine_client import Done, Failed
from engine.server.errors import error_response
from engine.server.generate_protocol import GenerateRequest, GenerateSampling
from engine.server.prepare import check_context, critical_cap, encode, sampling_params
from engine.server.streaming import final_text
from engine.server.waiting import wait_all_or_disconnect

router = APIRouter()
_PER_REQUEST_PARALLEL = "parallel" in {f.name for f in fields(SamplingParams)}


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(body: GenerateRequest, request: Request) -> Any:
    state = request.app.state.mv
    jobs = []
    for i in range(body.batch_size):
        prompt, sampling, want_lp, rid = body.item(i)
        param = ("text" if body.text is not None else "input_ids") + (f"[{i}]" if body.is_batch else "")
        ids = encode(state.lm, prompt, param)
        check_context(ids, state.config, param)
        jobs.append((ids, _params(sampling, want_lp, ids, state.config), sampling, want_lp, rid or uuid.uuid4().hex))
    request.state.log = {"id": jobs[0][4], "prompt_tokens": sum(len(j[0]) for j in jobs), "completion_tokens": 0}
    started = time.perf_counter()
    handles = [state.client.submit(ids, params) for ids, params, *_ in jobs]
    results = await wait_all_or_disconnect(handles, request)
    if results is None:
        return JSONResponse({}, status_code=499)
    failed = next((r for r in results if isinstance(r, Failed)), None)
    if failed is not None:
        return error_response(failed.status, failed.message)
    latency = time.perf_counter() - started
    items = [_item(done, job, state.lm.tokenizer, latency) for done, job in zip(results, jobs)]
    request.state.log["completion_tokens"] = sum(len(it["output_ids"]) for it in items)
    return items if body.is_batch else items[0]


def _params(s: GenerateSampling, want_lp: bool, ids: list[int], config: Any) -> SamplingParams:
    extra = {"parallel": False} if _PER_REQUEST_PARALLEL else {}
    return sampling_params(
        max_new_tokens=s.max_new_tokens if s.max_new_tokens is not None else config.default_max_tokens,
        max_critical_tokens=critical_cap(ids, config, None),
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=max(0, s.top_k),
        seed=s.sampling_seed,
        stop=s.stop_list,
        stop_token_ids=tuple(s.stop_token_ids or ()),
        ignore_eos=s.ignore_eos,
        include_stop_str_in_output=s.no_stop_trim,
        logprobs=want_lp,
        **extra,
    )


def _item(done: Done, job: tuple, tokenizer: Any, latency: float) -> dict[str, Any]:
    ids, _, sampling, want_lp, rid = job
    out, stop = done.output, done.request.stop_string
    reason = _finish_reason(out, stop)
    text_ids = out.token_ids
    if reason.get("matched") is not None and not isinstance(reason["matched"], str) and not sampling.no_stop_trim:
        text_ids = text_ids[:-1]  # SGLang trims a matched stop token from the text (never from output_ids)
    trimmed = out if text_ids is out.token_ids else _with_ids(out, text_ids)
    text = final_text(trimmed, stop, tokenizer, sampling.skip_special_tokens, sampling.no_stop_trim)
    meta: dict[str, Any] = {
        "id": rid,
        "finish_reason": reason,
        "prompt_tokens": len(ids),
        "completion_tokens": len(out.token_ids),
        "cached_tokens": 0,  # no cross-request prefix cache in the native engine (module docstring)
        "e2e_latency": latency,
    }
    if want_lp:
        meta["input_token_logprobs"] = []
        meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(out.logprobs or [], out.token_ids)]
    return {"text": text, "output_ids": list(out.token_ids), "meta_info": meta}


def _finish_reason(out: Any, stop: str | None) -> dict[str, Any]:
    if out.finish_reason == "stop":
        return {"type": "stop", "matched": stop if stop else (out.token_ids[-1] if out.token_ids else None)}
    if out.finish_reason == "abort":
        return {"type": "abort", "message": "aborted", "status_code": None, "err_type": None}
    if out.finish_reason == "error":
        return {"type": "abort", "message": getattr(out, "error", None) or "the engine failed this request",
                "status_code": 500, "err_type": "engine_error"}
    return {"type": "length", "length": len(out.token_ids)}  # length, critical_length, out_of_memory


def _with_ids(out: Any, ids: list[int]) -> Any:
    from dataclasses import replace

    return replace(out, token_ids=ids)
