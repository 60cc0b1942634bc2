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
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.params import SamplingParams
from engine.stops import StopHit, cut_at_stop
from engine.server.engine_client import Done, Failed
from engine.server.errors import error_response
from engine.server.generate_protocol import GenerateRequest, GenerateSampling
from engine.server.prepare import critical_cap, encode, sampling_params
from engine.server.waiting import wait_all_or_disconnect

router = APIRouter()


@router.get("/model_info")
@router.get("/get_model_info")  # SGLang's older name (deprecated there, still answered)
async def model_info(request: Request) -> dict[str, Any]:
    """SGLang's model info: a client without a model path loads the tokenizer and generation config from here."""
    config = request.app.state.mv.config
    return {"model_path": config.model_path, "tokenizer_path": config.model_path, "served_model_name": config.model_name,
            "is_generation": True, "preferred_sampling_params": None, "weight_version": "default"}


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(body: GenerateRequest, request: Request) -> Any:
    state = request.app.state.mv
    request.state.ticket.grow(body.batch_size - 1)  # the front door holds one slot; a batch holds one per input
    jobs = await state.offload.run(request, _prepare, state, body)
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
    items = await state.offload.run(None, _items, results, jobs, state.lm.tokenizer, latency)
    request.state.log["completion_tokens"] = sum(len(it["output_ids"]) for it in items)
    return items if body.is_batch else items[0]


def _prepare(state: Any, body: GenerateRequest) -> list[tuple]:
    """(ids, params, sampling, want_lp, rid) per input (a worker thread runs this: it tokenizes)."""
    jobs = []
    for i in range(body.batch_size):
        prompt, sampling, want_lp, rid = body.item(i)
        param = ("text" if body.text is not None else "input_ids") + (f"[{i}]" if body.is_batch else "")
        ids = encode(state.lm, prompt, param, state.config, state.limits.prompt_chars)
        processors = state.constraints.processors(sampling.ebnf, sampling.logit_bias)
        jobs.append((ids, _params(sampling, want_lp, ids, state.config, processors), sampling, want_lp, rid or uuid.uuid4().hex))
    return jobs


def _items(results: list[Done], jobs: list[tuple], tokenizer: Any, latency: float) -> list[dict[str, Any]]:
    return [_item(done, job, tokenizer, latency) for done, job in zip(results, jobs)]


def _params(s: GenerateSampling, want_lp: bool, ids: list[int], config: Any, processors: tuple = ()) -> SamplingParams:
    # The multiverse client's structure limits (custom_params, as the SGLang plugin reads them): the prompt's
    # blocks are laid out with the rules the client forked them under.
    limits = (s.custom_params or {}).get("multiverse")
    extra: dict[str, Any] = {}
    if isinstance(limits, dict):
        extra.update({k: limits[k] for k in ("max_paths", "max_depth") if isinstance(limits.get(k), int)})
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
        parallel=False,
        logits_processors=processors,
        **extra,
    )


def _item(done: Done, job: tuple, tokenizer: Any, latency: float) -> dict[str, Any]:
    ids, _, sampling, want_lp, rid = job
    out, hit = done.output, done.request.stop_hit
    meta: dict[str, Any] = {
        "id": rid,
        "finish_reason": _finish_reason(out, hit),
        "prompt_tokens": len(ids),
        "completion_tokens": len(out.token_ids),
        "cached_tokens": 0,  # no cross-request prefix cache in the native engine (module docstring)
        "e2e_latency": latency,
    }
    if want_lp:
        meta["input_token_logprobs"] = []
        meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(out.logprobs or [], out.token_ids)]
    return {"text": _text(out, hit, sampling, tokenizer), "output_ids": list(out.token_ids), "meta_info": meta}


def _text(out: Any, hit: StopHit | None, s: GenerateSampling, tokenizer: Any) -> str:
    """SGLang's text: decoded with its skip_special_tokens, a matched stop token left out and the text cut at
    a matched stop string, unless no_stop_trim (output_ids always keep every generated id)."""
    ids = out.token_ids
    if hit is not None and hit.string is None and not s.no_stop_trim:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=s.skip_special_tokens)
    if hit is None or hit.string is None:
        return text
    tail = tokenizer.decode(ids[-hit.tail_tokens :], skip_special_tokens=s.skip_special_tokens)
    return cut_at_stop(text, tail, hit, s.no_stop_trim)


def _finish_reason(out: Any, hit: StopHit | None) -> dict[str, Any]:
    if out.finish_reason == "stop":  # a stop string, else the stop token (EOS or stop_token_ids): the last id
        matched = hit.string if hit is not None and hit.string else (out.token_ids[-1] if out.token_ids else None)
        return {"type": "stop", "matched": matched}
    if out.finish_reason == "abort":
        return {"type": "abort", "message": "aborted", "status_code": None, "err_type": None}
    if out.finish_reason == "error":
        return {"type": "abort", "message": getattr(out, "error", None) or "the engine failed this request",
                "status_code": 500, "err_type": "engine_error"}
    return {"type": "length", "length": len(out.token_ids)}  # length, critical_length, out_of_memory
