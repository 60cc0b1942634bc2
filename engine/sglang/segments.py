"""Tokens for the remote scheduler: each running branch reads its next token from a segment the server decoded.

A segment is one `/generate` call on the branch's visible ids (prompt, parent's prefix, own tokens; after a
merge prefix + path 1..n + <Conclusion>). The server stops it at every possible structure event (`</Goal>`,
`</Path>`, EOS, a stop), at the remaining budget or after `call_tokens` new tokens (then the next segment
continues from the visible ids: a long stretch is several bounded calls), so a segment never runs past a
point where the branch's context changes; tokens the branch does not use (it closed, forked, hit a budget)
are dropped. Greedy segments are a function of the visible ids alone, so reading them one token per step is
what the native engine computes. Calls of one step go out as one batched request; a batched call that fails
for good (after the wire's retries) ends only the requests with an input in it (`errors`).

A call the plugin refused because the server evicted a merged block (`multiverse merge failed`) waits while
the request's evicted blocks are prefilled again from the tokens the client holds (rebuild.py, recursively),
then goes out again. One request recovers at a time, alone on the server (the others' calls drain first and
they launch none meanwhile: under KV pressure concurrent work evicts the children before their merge). At most `max_reissues` * (merges + 1) refusals in a row (a
call of the request's own that gets through starts the count again): then the request ends with the last
refusal in its `error`.

Decoding controls (engine/controls.py) travel in each call: `fork_bias` as SGLang's `logit_bias` on `<Parallel>`,
structure="constrained" as `ebnf`, the grammar of the branch's automaton from its state (engine/grammar.py), and
`fork_threshold` (greedy) from the server's logprob of a drawn `<Parallel>`: below tau, the segment is cut there
and one token is asked again with `<Parallel>` masked (VETO_BIAS), which is the native redraw. Path caps need
only the outlines' logprobs (asked for; the native fork code holds paths back).

Invariant: a buffer is valid only while `len(branch.visible) == buffer.base + buffer.taken`.
"""
from __future__ import annotations

import math
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from engine import path_cap
from engine.branch import Branch
from engine.grammar import branch_grammar
from engine.request import Phase, Request
from engine.sglang.http import GenerateCall, Reply, ServerError, Wire
from engine.sglang.plugin.structure import rules_to_params
from engine.sglang.rebuild import Ids, Rebuild, block_children
from multiverse.tags import StructureVocab

MERGE_FAILED = "multiverse merge failed"  # the plugin's abort message (engine/sglang/plugin/cache.py)
Input = tuple[str, Request, "Branch | None", int, Ids]  # (kind, request, branch or None for a rebuild, len(ids), ids)
VETO_BIAS = -1e9  # on `<Parallel>` for the one token that replaces a vetoed fork (finite: JSON has no -inf)


@dataclass
class Buffer:
    base: int  # len(branch.visible) when the segment was asked for
    tokens: list[int]
    logprobs: list[float | None]
    taken: int = 0
    veto: bool = False  # its first token replaces a `<Parallel>` that fork_threshold vetoed


@dataclass
class MergeCounts:
    exact: int = 0  # the server reused every child's KV: cached_tokens == prompt_tokens - 1
    recomputed: int = 0  # any other merge (multiverse serve: re-laid exactly; stock SGLang: approximate)
    reissued: int = 0  # calls the plugin refused (a merged block's KV was evicted) and the client sent again
    rebuilt: int = 0  # re-prefill calls of evicted paths (rebuild.py)
    prefilled: list[int] = field(default_factory=list)  # prompt_tokens - cached_tokens of each merge call
    close_calls: int = 0  # `</Path>` KV computations (one per closed path, as the native engine does)


class Segments:
    def __init__(self, wire: Wire, vocab: StructureVocab, eos_ids: frozenset[int], call_tokens: int = 512,
                 processor: dict[int, tuple[str, dict]] | None = None) -> None:
        self.wire, self.vocab, self.tags, self.eos_ids, self.call_tokens = wire, vocab, vocab.tags, eos_ids, call_tokens
        self.buffers: dict[int, Buffer] = {}  # id(branch) -> its segment
        self.merges: dict[int, MergeCounts] = {}  # request id -> counts
        self.processors = processor if processor is not None else {}  # request id -> (serialized class, params)
        self.max_reissues = 4  # refusals in a row per merge of the request (+ 1) before it ends with the refusal
        self.inflight: dict[futures.Future, list[Input]] = {}  # batched call -> its inputs
        self.busy: set[tuple[int, int]] = set()  # (id(branch), len(visible)) with a call in flight
        self.closed: set[tuple[int, int]] = set()  # (id(branch), len(visible)) whose </Path> KV the server holds
        self.rebuilds: dict[int, Rebuild] = {}  # request id -> evicted sequences to prefill again
        self.errors: dict[int, str] = {}  # request id -> why the server failed it
        self.vetoed: set[tuple[int, int]] = set()  # (id(branch), len(visible)) where a drawn <Parallel> was vetoed

    def forget(self, request: Request) -> None:
        """After the request finished: drop its buffers and marks (a call still in flight is ignored on return)."""
        for b in request.branches():
            self.buffers.pop(id(b), None)
            self.closed = {k for k in self.closed if k[0] != id(b)}
            self.vetoed = {k for k in self.vetoed if k[0] != id(b)}
        self.errors.pop(request.request_id, None)
        self.rebuilds.pop(request.request_id, None)
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
        calls: list[tuple[Input, GenerateCall]] = []
        turn = self._recovering(rows)
        if turn is not None and any(i[1].request_id != turn for batch in self.inflight.values() for i in batch):
            return  # it recovers alone: the other requests' calls drain from the server first
        for r, samplers, closing in rows.values():
            if r.request_id in self.errors or (turn is not None and r.request_id != turn):
                continue  # one request recovers from an eviction at a time; the others launch nothing new meanwhile
            rebuild = self.rebuilds.get(r.request_id)
            if rebuild is not None and rebuild.active:  # evicted blocks first; the request's own calls wait
                for ids in rebuild.due():
                    rebuild.inflight.add(ids)
                    rebuild.sent += 1
                    calls.append((("rebuild", r, None, len(ids), ids), self._prefill_call(r, list(ids))))
                continue
            for b in closing:
                key = (id(b), len(b.visible))
                if key not in self.closed and key not in self.busy:
                    calls.append((("close", r, b, len(b.visible), tuple(b.visible)), self._prefill_call(r, list(b.visible))))
            for b in samplers:
                if self._ready(b) or (id(b), len(b.visible)) in self.busy:
                    continue
                if self._is_merge(b) and any((id(c), len(c.visible)) not in self.closed for c in closing):
                    continue  # the merge needs every path's KV on the server first
                call = self._segment_call(r, b)
                calls.append((("merge" if self._is_merge(b) else "segment", r, b, len(call.input_ids), tuple(call.input_ids)), call))
        if calls:
            for (_, _, b, base, _), _ in calls:
                if b is not None:
                    self.busy.add((id(b), base))
            self.inflight[self.wire.post_batch_async([c for _, c in calls])] = [i for i, _ in calls]

    def _recovering(self, rows: dict[int, tuple[Request, list[Branch], list[Branch]]]) -> int | None:
        """The request whose evicted blocks are being rebuilt (the oldest one, if several), else None. It recovers
        alone: it launches once no other request has a call on the server, and no other request launches one
        until it recovered. Under KV pressure, concurrent rebuilds and other requests' running calls evict its
        children before its merge (a livelock); alone, its blocks fit where its sequence fit."""
        waiting = [rid for rid, rb in self.rebuilds.items() if rb.recovering and rid in rows and rid not in self.errors]
        return min(waiting) if waiting else None

    def _settle(self, future: futures.Future) -> None:
        what = self.inflight.pop(future)
        try:
            replies = future.result()
        except Exception as err:  # noqa: BLE001 - this call failed for good: its requests end, no other
            for kind, request, branch, base, ids in what:
                self._release(request, branch, base, ids)
                if request.phase is not Phase.FINISHED:
                    label = branch.label if branch is not None else f"of {len(ids)} evicted tokens"
                    self.errors.setdefault(request.request_id, f"the {kind} call of branch {label!r} failed: {err}")
            return
        for (kind, request, branch, base, ids), reply in zip(what, replies):
            self._release(request, branch, base, ids)
            if request.phase is Phase.FINISHED:  # aborted or ended while the call ran: its answer is moot
                continue
            if reply.aborted and MERGE_FAILED in reply.aborted and self._refused(request, ids, reply.aborted):
                continue  # it goes out again once the evicted blocks are prefilled again
            if reply.aborted:
                what_call = f"branch {branch.label!r}" if branch is not None else f"re-prefilling {len(ids)} evicted tokens"
                self.errors[request.request_id] = f"{what_call}: the server aborted the call: {reply.aborted}"
                continue
            if kind == "rebuild":
                self.rebuilds[request.request_id].done(ids)
                self.counts(request).rebuilt += 1
                continue
            if request.request_id in self.rebuilds:  # its own call got through: recovered, refusals start again from 0
                self.rebuilds[request.request_id].refusals = 0
                self.rebuilds[request.request_id].recovering = False
            if kind == "close":
                self.counts(request).close_calls += 1
                self.closed.add((id(branch), base))
            else:
                if kind == "merge":
                    self._count_merge(request, reply)
                self._store(request, branch, reply)

    def _release(self, request: Request, branch: Branch | None, base: int, ids: Ids) -> None:
        if branch is not None:
            self.busy.discard((id(branch), base))
        elif request.request_id in self.rebuilds:
            self.rebuilds[request.request_id].inflight.discard(ids)

    def _refused(self, request: Request, ids: Ids, why: str) -> bool:
        """The plugin refused a call of `ids` (evicted KV): queue the children of its last block for a re-prefill
        (the call itself is sent again after them). False when that cannot help: no block to rebuild, or the
        request used up its refusals; its error then says so."""
        rebuild = self.rebuilds.setdefault(request.request_id, Rebuild())
        rebuild.refusals += 1
        cap = self.max_reissues * (request.num_merges + 1)
        children = block_children(ids, self.vocab, request.rules)
        if isinstance(children, str) or rebuild.refusals > cap:
            reason = children if isinstance(children, str) else f"refused {rebuild.refusals} times (at most {cap})"
            self.errors[request.request_id] = f"{why} ({reason})"
            return True
        self.counts(request).reissued += 1
        rebuild.recovering = True
        rebuild.push(children)
        return True

    def _can_step(self, request: Request, samplers: list[Branch], closing: list[Branch]) -> bool:
        if request.request_id in self.errors:
            return True
        rebuild = self.rebuilds.get(request.request_id)
        if rebuild is not None and (rebuild.active or rebuild.inflight):
            return False
        busy = any(k[0] == id(b) for b in samplers + closing for k in self.busy)
        return not busy and all(self._ready(b) for b in samplers) and all((id(c), len(c.visible)) in self.closed for c in closing)

    def _store(self, request: Request, branch: Branch, reply: Reply) -> None:
        if not reply.output_ids:
            self.errors[request.request_id] = f"branch {branch.label!r}: the server returned no token"
        else:
            base = len(branch.visible)
            veto = (id(branch), base) in self.vetoed
            self.vetoed.discard((id(branch), base))
            tokens, logprobs = list(reply.output_ids), list(reply.logprobs)
            cut = self._gate(request.params.fork_threshold, tokens, logprobs, start=int(veto))
            if cut is not None:  # the drawn <Parallel> at `cut` is vetoed: the tokens before it stand
                tokens, logprobs = tokens[:cut], logprobs[:cut]
                self.vetoed.add((id(branch), base + cut))
            self.buffers[id(branch)] = Buffer(base, tokens, logprobs, veto=veto)

    def _gate(self, tau: float | None, tokens: list[int], logprobs: list[float | None], start: int) -> int | None:
        """The index of the first `<Parallel>` whose probability is below tau (engine/fork_gate.py), or None."""
        if tau is None:
            return None
        for j in range(start, len(tokens)):
            lp = logprobs[j] if j < len(logprobs) else None
            if tokens[j] == self.tags.parallel_open and lp is not None and math.exp(lp) < tau:
                return j
        return None

    def take(self, branch: Branch) -> tuple[int, float | None, bool | None]:
        """(token, logprob, fork): fork as engine.sampling.Draw's (None: no <Parallel> drawn; False: vetoed)."""
        buf = self.buffers[id(branch)]
        token, logprob = buf.tokens[buf.taken], buf.logprobs[buf.taken]
        fork = False if buf.veto and buf.taken == 0 else True if token == self.tags.parallel_open else None
        buf.taken += 1
        return token, logprob, fork

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

    def _prefill_call(self, request: Request, ids: list[int]) -> GenerateCall:
        """Compute the KV of ids (a closed path's `</Path>`, an evicted path again): the server then holds them,
        as a merge needs. The one token it decodes is dropped."""
        sampling = {"max_new_tokens": 1, "temperature": 0.0, "skip_special_tokens": False,
                    "custom_params": rules_to_params(request.rules)}
        return GenerateCall(ids, sampling)

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
        veto = (id(branch), len(branch.visible)) in self.vetoed
        bias = p.fork_bias + (VETO_BIAS if veto else 0.0)
        if bias:
            sampling["logit_bias"] = {str(self.tags.parallel_open): bias}
        if veto:  # only the token that replaces the vetoed <Parallel> is drawn with it masked
            sampling["max_new_tokens"] = 1
        if branch.guard is not None:  # structure="constrained": the branch's grammar from its automaton's state
            sampling["ebnf"] = branch_grammar(branch.guard)
        processor = self.processors.get(request.request_id)
        if processor is not None:
            sampling["custom_params"] = {**sampling["custom_params"], **processor[1]}
        logprobs = p.logprobs or p.fork_threshold is not None or path_cap.capped(p)  # the gate, outline confidences
        return GenerateCall(list(branch.visible), sampling, logprobs, processor[0] if processor else None)


__all__ = ["Buffer", "MergeCounts", "Segments", "ServerError"]
