"""Tokens for the remote scheduler: each running branch reads its next token from a segment the server decoded.

A segment is one `/generate` call on the branch's visible ids (prompt, parent's prefix, own tokens; after a
merge prefix + path 1..n + <Conclusion>). The server stops it at every possible structure event (`</Goal>`,
`</Path>`, EOS, a stop), at the remaining budget or after `call_tokens` new tokens (then the next segment
continues from the visible ids: a long stretch is several bounded calls), so a segment never runs past a
point where the branch's context changes; tokens the branch does not use (it closed, forked, hit a budget)
are dropped. Greedy segments are a function of the visible ids alone, so reading them one token per step is
what the native engine computes. Calls of one step go out as one batched request; a batched call that fails
for good (after the wire's retries) ends only the requests with an input in it (`errors`).

Invariant: a buffer is valid only while `len(branch.visible) == buffer.base + buffer.taken`.
"""
from __future__ import annotations

import zlib
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from engine.branch import Branch
from engine.request import Phase, Request
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
    def __init__(self, wire: Wire, tags: Any, eos_ids: frozenset[int], call_tokens: int = 512,
                 processor: dict[int, tuple[str, dict]] | None = None) -> None:
        self.wire, self.tags, self.eos_ids, self.call_tokens = wire, tags, eos_ids, call_tokens
        self.buffers: dict[int, Buffer] = {}  # id(branch) -> its segment
        self.merges: dict[int, MergeCounts] = {}  # request id -> counts
        self.processors = processor if processor is not None else {}  # request id -> (serialized class, params)
        self.max_reissues = 2
        self.inflight: dict[futures.Future, list[tuple[str, Request, Branch, int]]] = {}  # batched call -> its inputs
        self.busy: set[tuple[int, int]] = set()  # (id(branch), len(visible)) with a call in flight
        self.closed: set[tuple[int, int]] = set()  # (id(branch), len(visible)) whose </Path> KV the server holds
        self.reclose: dict[int, list[Branch]] = {}  # request id -> paths to close again (their KV was evicted)
        self.errors: dict[int, str] = {}  # request id -> why the server failed it

    def forget(self, request: Request) -> None:
        """After the request finished: drop its buffers and marks (a call still in flight is ignored on return)."""
        for b in request.branches():
            self.buffers.pop(id(b), None)
            self.closed = {k for k in self.closed if k[0] != id(b)}
        self.errors.pop(request.request_id, None)
        self.reclose.pop(request.request_id, None)
        self.merges.pop(request.request_id, None)
        self.processors.pop(request.request_id, None)

    # ------------------------------------------------------------------ one step
    def prepare(self, rows: dict[int, tuple[Request, list[Branch], list[Branch]]]) -> set[int]:
        """Launch the calls the requests' rows need; return the ids of the requests that can step now.

        rows: request id -> (request, sampling branches, closed paths with a pending `</Path>`). A request steps
        only when every branch of it has its next token (its branches stay in lock step, as in the native
        engine); requests are independent, so one waiting for the server never holds back another. Blocks
        only while no request can step.
        """
        while True:
            self._launch(rows)
            ready = {rid for rid, (r, samplers, closing) in rows.items() if self._can_step(r, samplers, closing)}
            if ready or not self.inflight:
                return ready
            done, _ = futures.wait(list(self.inflight), return_when=futures.FIRST_COMPLETED)
            for future in done:
                self._settle(future)

    def error(self, request: Request) -> str | None:
        return self.errors.get(request.request_id)

    def _launch(self, rows: dict[int, tuple[Request, list[Branch], list[Branch]]]) -> None:
        calls: list[tuple[str, Request, Branch, GenerateCall]] = []
        for r, samplers, closing in rows.values():
            if r.request_id in self.errors:
                continue
            for b in closing + self.reclose.get(r.request_id, []):
                key = (id(b), len(b.visible))
                if key not in self.closed and key not in self.busy:
                    calls.append(("close", r, b, self._close_call(r, b)))
            for b in samplers:
                if self._ready(b) or (id(b), len(b.visible)) in self.busy:
                    continue
                if self._is_merge(b):
                    waiting = [c for c in closing + self.reclose.get(r.request_id, []) if (id(c), len(c.visible)) not in self.closed]
                    if waiting:  # the merge needs every path's KV on the server first
                        continue
                    calls.append(("merge", r, b, self._segment_call(r, b)))
                else:
                    calls.append(("segment", r, b, self._segment_call(r, b)))
        if calls:
            for _, _, b, call in calls:
                self.busy.add((id(b), len(call.input_ids)))
            self.inflight[self.wire.post_batch_async([c for *_, c in calls])] = [(k, r, b, len(c.input_ids)) for k, r, b, c in calls]

    def _settle(self, future: futures.Future) -> None:
        what = self.inflight.pop(future)
        try:
            replies = future.result()
        except Exception as err:  # noqa: BLE001 - this call failed for good: its requests end, no other
            for kind, request, branch, base in what:
                self.busy.discard((id(branch), base))
                if request.phase is not Phase.FINISHED:
                    self.errors.setdefault(request.request_id, f"the {kind} call of branch {branch.label!r} failed: {err}")
            return
        for (kind, request, branch, base), reply in zip(what, replies):
            self.busy.discard((id(branch), base))
            if request.phase is Phase.FINISHED:  # aborted or ended while the call ran: its answer is moot
                continue
            if kind == "close":
                self.counts(request).close_calls += 1
                if reply.aborted:
                    self.errors[request.request_id] = f"closing path {branch.label!r}: {reply.aborted}"
                self.closed.add((id(branch), base))
                continue
            if kind == "merge" and reply.aborted and MERGE_FAILED in reply.aborted:
                counts = self.counts(request)
                if counts.reissued < self.max_reissues * max(1, request.num_merges):
                    # the children's KV is gone: compute it again from their tokens, then merge again
                    children = branch.forks[-1][1]
                    self.closed -= {(id(c), len(c.visible)) for c in children}
                    self.reclose[request.request_id] = children
                    counts.reissued += 1
                    continue
            if kind == "merge":
                self._count_merge(request, reply)
                self.reclose.pop(request.request_id, None)
            self._store(request, branch, reply)

    def _can_step(self, request: Request, samplers: list[Branch], closing: list[Branch]) -> bool:
        if request.request_id in self.errors:
            return True
        busy = any(k[0] == id(b) for b in samplers + closing for k in self.busy)
        return not busy and all(self._ready(b) for b in samplers) and all((id(c), len(c.visible)) in self.closed for c in closing)

    def _store(self, request: Request, branch: Branch, reply: Reply) -> None:
        if reply.aborted:
            self.errors[request.request_id] = f"branch {branch.label!r}: the server aborted the call: {reply.aborted}"
        elif not reply.output_ids:
            self.errors[request.request_id] = f"branch {branch.label!r}: the server returned no token"
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
            "max_new_tokens": max(1, min(budget, self.call_tokens)),
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
