"""Tokens for the remote scheduler: each running branch reads its next token from a segment the server decoded.

A segment is one `/generate` call on the branch's visible ids (prompt, parent's prefix, own tokens; after a
merge prefix + path 1..n + <Conclusion>). The server stops it at every possible structure event (`</Goal>`,
`</Path>`, EOS, a stop) or at the remaining budget, so a segment never runs past a point where the branch's
context changes; tokens the branch does not use (it closed, forked, hit a budget) are dropped. Greedy
segments are a function of the visible ids alone, so reading them one token per step is what the native
engine computes. Calls of one step go out as one batched request.

Invariant: a buffer is valid only while `len(branch.visible) == buffer.base + buffer.taken`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from engine.branch import Branch
from engine.request import Request
from engine.sglang.http import GenerateCall, Reply, ServerError, Wire
from engine.sglang.plugin.structure import rules_to_params

MERGE_FAILED = "multiverse merge failed"  # the plugin's abort message (engine/sglang/plugin/cache.py)


@dataclass
class Buffer:
    base: int  # len(branch.visible) when the segment was asked for
    tokens: list[int]
    logprobs: list[float | None]
    taken: int = 0


@dataclass
class MergeCounts:
    exact: int = 0  # the server reused every child's KV: cached_tokens == prompt_tokens - 1
    recomputed: int = 0  # any other merge (multiverse serve: re-laid exactly; stock SGLang: approximate)
    reissued: int = 0  # merges the plugin refused (a child's KV was evicted) and the client sent again
    prefilled: list[int] = field(default_factory=list)  # prompt_tokens - cached_tokens of each merge call
    close_calls: int = 0  # `</Path>` KV computations (one per closed path, as the native engine does)


class Segments:
    def __init__(self, wire: Wire, tags: Any, eos_ids: frozenset[int], processor: dict[int, tuple[str, dict]] | None = None) -> None:
        self.wire, self.tags, self.eos_ids = wire, tags, eos_ids
        self.buffers: dict[int, Buffer] = {}  # id(branch) -> its segment
        self.merges: dict[int, MergeCounts] = {}  # request id -> counts
        self.processors = processor if processor is not None else {}  # request id -> (serialized class, params)
        self.max_reissues = 2

    def forget(self, request: Request) -> None:
        for b in request.branches():
            self.buffers.pop(id(b), None)
        self.merges.pop(request.request_id, None)
        self.processors.pop(request.request_id, None)

    # ------------------------------------------------------------------ one step
    def fetch(self, samplers: list[tuple[Request, Branch]], closing: list[tuple[Request, Branch]]) -> dict[int, str]:
        """Fill every sampler's buffer; compute closed paths' `</Path>` first. Returns request id -> error."""
        errors: dict[int, str] = {}
        needy = [(r, b) for r, b in samplers if not self._ready(b)]
        merges = [(r, b) for r, b in needy if self._is_merge(b)]
        plain = [(r, b) for r, b in needy if not self._is_merge(b)]
        self._call([self._close_call(r, b) for r, b in closing] + [self._segment_call(r, b) for r, b in plain],
                   [("close", r, b) for r, b in closing] + [("segment", r, b) for r, b in plain], errors)
        for attempt in range(self.max_reissues + 1):
            merges = [(r, b) for r, b in merges if r.request_id not in errors]
            if not merges:
                break
            replies = self.wire.post_batch([self._segment_call(r, b) for r, b in merges])
            refused = []
            for (r, b), reply in zip(merges, replies):
                if reply.aborted and MERGE_FAILED in reply.aborted and attempt < self.max_reissues:
                    refused.append((r, b))
                    continue
                self._count_merge(r, reply)
                self._store(r, b, reply, errors)
            if refused:  # the children's KV is gone: compute it again from their tokens, then merge again
                calls = [(r, c) for r, b in refused for c in b.forks[-1][1]]
                self._call([self._close_call(r, c) for r, c in calls], [("close", r, c) for r, c in calls], errors)
                for r, _ in refused:
                    self.counts(r).reissued += 1
            merges = refused
        return errors

    def _call(self, calls: list[GenerateCall], what: list[tuple[str, Request, Branch]], errors: dict[int, str]) -> None:
        for (kind, request, branch), reply in zip(what, self.wire.post_batch(calls)):
            if kind == "close":
                self.counts(request).close_calls += 1
                if reply.aborted:
                    errors[request.request_id] = f"closing path {branch.label!r}: {reply.aborted}"
            else:
                self._store(request, branch, reply, errors)

    def _store(self, request: Request, branch: Branch, reply: Reply, errors: dict[int, str]) -> None:
        if reply.aborted:
            errors[request.request_id] = f"branch {branch.label!r}: the server aborted the call: {reply.aborted}"
        elif not reply.output_ids:
            errors[request.request_id] = f"branch {branch.label!r}: the server returned no token"
        else:
            self.buffers[id(branch)] = Buffer(len(branch.visible), reply.output_ids, reply.logprobs)

    def take(self, branch: Branch) -> tuple[int, float | None]:
        buf = self.buffers[id(branch)]
        token, logprob = buf.tokens[buf.taken], buf.logprobs[buf.taken]
        buf.taken += 1
        return token, logprob

    def counts(self, request: Request | int) -> MergeCounts:
        rid = request if isinstance(request, int) else request.request_id
        return self.merges.setdefault(rid, MergeCounts())

    # ------------------------------------------------------------------ calls
    def _ready(self, branch: Branch) -> bool:
        buf = self.buffers.get(id(branch))
        return buf is not None and buf.taken < len(buf.tokens) and buf.base + buf.taken == len(branch.visible)

    def _is_merge(self, branch: Branch) -> bool:
        v, t = branch.visible, self.tags
        return len(v) >= 2 and v[-1] == t.conclusion_open and v[-2] == t.path_close and branch.pending_ids == [v[-1]]

    def _count_merge(self, request: Request, reply: Reply) -> None:
        counts = self.counts(request)
        counts.prefilled.append(reply.prompt_tokens - reply.cached_tokens)
        if reply.cached_tokens == reply.prompt_tokens - 1:
            counts.exact += 1
        else:
            counts.recomputed += 1

    def _close_call(self, request: Request, branch: Branch) -> GenerateCall:
        """Compute a closed path's `</Path>` KV (the server then holds prefix + path, as the merge needs)."""
        sampling = {"max_new_tokens": 1, "temperature": 0.0, "skip_special_tokens": False,
                    "custom_params": rules_to_params(request.rules)}
        return GenerateCall(list(branch.visible), sampling)

    def _segment_call(self, request: Request, branch: Branch) -> GenerateCall:
        p = request.params
        budget = p.max_new_tokens - request.num_generated
        if p.max_critical_tokens is not None:
            budget = min(budget, p.max_critical_tokens + request.prompt_position - branch.state.position)
        stops = {self.tags.goal_close, self.tags.path_close, *p.stop_token_ids}
        if not p.ignore_eos:
            stops |= set(self.eos_ids)
        sampling: dict[str, Any] = {
            "max_new_tokens": max(1, budget),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k or -1,
            "stop_token_ids": sorted(stops),
            "ignore_eos": p.ignore_eos,
            "no_stop_trim": True,
            "skip_special_tokens": False,
            "custom_params": rules_to_params(request.rules),
        }
        if p.stop:
            sampling["stop"] = list(p.stop)
        if not p.greedy:
            key = f"{request.seed}/{branch.label}/{len(branch.visible)}".encode()
            sampling["sampling_seed"] = zlib.crc32(key)
        processor = self.processors.get(request.request_id)
        if processor is not None:
            sampling["custom_params"] = {**sampling["custom_params"], **processor[1]}
        return GenerateCall(list(branch.visible), sampling, p.logprobs, processor[0] if processor else None)


__all__ = ["Buffer", "MergeCounts", "Segments", "ServerError"]
