"""OpenAI response bodies (pure functions): completions, chat completions, stream chunks, usage, logprobs.

Content never holds special tokens unless the request asked (`skip_special_tokens: false`); the raw text with
the structure tags, the branch tree and the SPEC §7 stats travel in the `multiverse` extension field.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from engine.result import RequestOutput

FINISH = {"stop": "stop", "length": "length", "critical_length": "length", "out_of_memory": "length", "abort": "abort"}


def finish_reason(output: RequestOutput) -> str:
    return FINISH.get(output.finish_reason, output.finish_reason)


def usage(output: RequestOutput) -> dict[str, int]:
    n_prompt, n_out = len(output.prompt_token_ids), len(output.token_ids)
    return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}


def extension(output: RequestOutput, raw_text: str) -> dict[str, Any]:
    return {
        "raw_text": raw_text,
        "finish_reason": output.finish_reason,
        "tree": [asdict(b) for b in output.tree],
        "stats": output.stats.as_dict(),
        "seed": output.seed,
    }


def logprobs(output: RequestOutput, tokenizer: Any, chat: bool) -> dict[str, Any] | None:
    """Per generated token; None at tokens the engine forced (fork prefixes, <Conclusion>, closing </Path>)."""
    if output.logprobs is None:
        return None
    pieces = [tokenizer.decode([t], skip_special_tokens=False) for t in output.token_ids]
    if chat:
        return {
            "content": [
                {"token": p, "logprob": lp, "bytes": list(p.encode()), "top_logprobs": []}
                for p, lp in zip(pieces, output.logprobs)
            ]
        }
    offsets, at = [], 0
    for p in pieces:
        offsets.append(at)
        at += len(p)
    return {"tokens": pieces, "token_logprobs": list(output.logprobs), "top_logprobs": None, "text_offset": offsets}


def response(rid: str, created: int, model: str, chat: bool, text: str, out: RequestOutput, extra: dict[str, Any], lp: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason(out), "logprobs": lp}
    choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(out),
        "multiverse": extra,
    }


def chunk(rid: str, created: int, model: str, chat: bool, delta: str | None, reason: str | None = None, role: bool = False) -> dict[str, Any]:
    """One stream chunk; `role=True` is the chat stream's opening chunk."""
    if chat:
        content: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
        choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
    obj = "chat.completion.chunk" if chat else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}


def usage_chunk(rid: str, created: int, model: str, chat: bool, out: RequestOutput) -> dict[str, Any]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage(out)}
