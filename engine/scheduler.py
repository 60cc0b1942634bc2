"""Continuous batching over requests and branches, with fork and merge per SPEC §5 and the limits of §6.

One step = admit -> ONE forward over every branch with pending tokens (prefills, decodes, forced tokens) ->
sample every running branch -> apply each token (stops, budgets, fork, path end, merge) -> retire finished
requests. Fork and merge live in `engine/forking.py`, admission and preemption in `engine/admission.py`.
Memory: a request is admitted while `reserve_pages` stay free; when a step needs a page and none is free, the
newest request that is younger than the one in need is preempted (freed entirely and requeued; it restarts
with the same seed and reproduces its output). The oldest running request therefore always progresses; if it
alone cannot fit, it finishes with `out_of_memory`. No path leaks pages: `check_integrity`.

Admission: a waiting request that does not fit is skipped and younger ones behind it may start, but at most
`admission_skip_limit` times; after that nothing behind it starts until it does (no head-of-line blocking,
no starvation). A prompt larger than the whole pool is refused at once (`out_of_memory`).

Faults: an exception raised while handling ONE request (its logits processor, its sampling, its stop check,
its events' sink, its fork) finishes that request with finish_reason "error" and `error` set, frees its pages,
and the step goes on for the others. Only a failing forward (shared by every row) is engine-wide: the requests
of that step finish with "error" and `EngineError` is raised; nothing stays allocated.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

from engine.admission import AdmissionMixin
from engine.branch import Branch, Status
from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.forking import ForkMergeMixin
from engine.events import BranchClosed, Event, Finished, Tokens
from engine.kv_pool import KVPool
from engine.request import Phase, Request, close_open_paths, open_paths
from engine.result import RequestOutput, Stats
from engine.runner import ModelRunner
from engine.chunking import plan_step
from engine.positions import fork_reach, no_room, reach, reach_after
from engine.sampling import sample
from engine.stops import StopChecker
from multiverse.attention.scanner import Fallback, Fork, PathEnd
from multiverse.encode import fork_prefix_ids
from multiverse.tags import StructureVocab


class EngineError(RuntimeError):
    """A step failed for every request in it (the shared forward raised); those requests finished "error"."""


class Scheduler(AdmissionMixin, ForkMergeMixin):
    """The step loop, token handling and finishing; admission/preemption live in `engine/admission.py`,
    fork/merge in `engine/forking.py` (mixins without state of their own: this class owns every field)."""

    def __init__(
        self,
        runner: ModelRunner,
        pool: KVPool,
        config: EngineConfig,
        vocab: StructureVocab,
        eos_ids: frozenset[int],
        codec: TextCodec,
        max_positions: int | None = None,
    ) -> None:
        self.runner, self.pool, self.config, self.vocab = runner, pool, config, vocab
        self.max_positions = max_positions  # the model's position range (context); None: unbounded
        self.eos_ids, self.codec, self.decode = eos_ids, codec, codec.raw
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.stops: dict[int, StopChecker] = {}

    # ------------------------------------------------------------------ public
    def add(self, request: Request) -> None:
        if not request.prompt_ids:
            raise ValueError(f"request {request.request_id}: empty prompt (at least one token is needed)")
        p = request.params
        self.stops[request.request_id] = StopChecker(p.stop, p.stop_token_ids, self.decode)
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, request_id: int, reason: str = "abort") -> Request | None:
        """Finish a request now (waiting or mid-branch); every page it held returns to the pool at once."""
        for request in list(self.waiting) + self.running:
            if request.request_id == request_id and request.phase is not Phase.FINISHED:
                if request in self.waiting:
                    self.waiting.remove(request)
                self._finish(request, reason)
                self.running = [r for r in self.running if r is not request]
                return request
        return None

    def step(self) -> list[Request]:
        """Run one engine step; returns the requests that finished in it."""
        finished = self._admit()
        rows = [(r, b) for r in self.running for b in r.branches() if b.pending_ids]
        counts = plan_step(rows, self.config.max_batch_tokens)
        rows = [(r, b, n) for (r, b), n in zip(rows, counts) if n]
        if rows:
            samplers = [(r, b) for r, b, n in rows if n == len(b.pending_ids) and b.status is Status.RUNNING]
            if self.config.step_delay_s:  # test-only: a slow model (timeouts, bounded SGLang calls)
                time.sleep(self.config.step_delay_s)
            try:
                logits = self.runner.forward(
                    [b for _, b, _ in rows], [n for _, _, n in rows],
                    [n == len(b.pending_ids) and b.status is Status.RUNNING for _, b, n in rows],
                )
            except Exception as err:
                failed = list({id(r): r for r, _, _ in rows}.values())
                for request in failed:
                    self._fail(request, err)
                self.running = [r for r in self.running if r.phase is Phase.RUNNING]
                raise EngineError(f"the forward of a step failed ({len(failed)} requests ended): {err!r}") from err
            for _, branch, n in rows:
                branch.computed(n)
            choices = sample(logits, [b for _, b in samplers], [r.params for r, _ in samplers], self.vocab.tags.parallel_open)
            for (request, branch), choice in zip(samplers, choices):
                if request.phase is not Phase.RUNNING:
                    continue
                try:
                    if isinstance(choice, Exception):
                        raise choice
                    request.note_draw(branch, choice)
                    self._on_token(request, branch, choice.token, choice.logprob)
                except Exception as err:  # noqa: BLE001 - this request's fault: it alone ends
                    self._fail(request, err)
        return self._retire(finished)

    def _retire(self, finished: list[Request]) -> list[Request]:
        """End of a step: finished requests leave `running`; the KV accounting is checked when asked."""
        finished += [r for r in self.running if r.phase is Phase.FINISHED]
        self.running = [r for r in self.running if r.phase is Phase.RUNNING]
        for request in self.running:
            request.note_memory()
        if self.config.check_integrity:
            self.check_integrity()
        return finished

    def check_integrity(self) -> None:
        """Assert the KV accounting: refcounts == holders, every table slot lies in a page its branch holds."""
        holders = [b.pages for r in self.running for b in r.branches()]
        self.pool.check_integrity(holders)
        size = self.pool.page_size
        for request in self.running:
            for b in request.branches():
                assert len(b.slots) == len(b.visible), f"request {request.request_id} branch {b.label!r}: table skew"
                if b._table_len:  # the tensor mirror of the table agrees with the list on what it covers
                    assert b._table[: b._table_len].tolist() == b.slots[: b._table_len], f"branch {b.label!r}: stale table"
                if b.pages:
                    held = set(b.pages)
                    assert all(s // size in held for s in b.slots), f"branch {b.label!r} reads a page it does not hold"
        written = [s for r in self.running for b in r.branches() if b.pages for s in b.slots[b.num_shared :]]
        assert len(written) == len(set(written)), "two tokens were given the same KV slot"
        assert all(r.root is None or not any(b.pages for b in r.branches()) for r in self.waiting)
        if not self.running:
            assert self.pool.num_used == 0, f"{self.pool.num_used} pages leaked with no request running"

    # ------------------------------------------------------------------ tokens
    def _on_token(self, request: Request, branch: Branch, token: int, logprob: float) -> None:
        is_eos = token in self.eos_ids and not request.params.ignore_eos
        if not self._fits(request, branch, self.vocab.tags.path_close if is_eos and branch.parent is not None else token):
            self._finish(request, request.cap_reason)  # a token past the position cap is not placed
            return
        request.num_generated += 1
        if is_eos and branch.parent is not None:
            self._close_path(request, branch, "eos")  # EOS inside a path closes it: forced </Path> replaces it
        else:
            self._consume(request, branch, token, logprob)
            if request.phase is not Phase.RUNNING:
                return
            start = len(request.prompt_ids) if branch.parent is None else 0
            stop = self.stops[request.request_id].check(branch.tokens, start) if not is_eos else None
            if is_eos or (stop and branch.parent is None):
                request.stop_hit = stop
                self._finish(request, "stop")
            elif stop and branch.status is Status.RUNNING:
                self._close_path(request, branch, "stop")
        if request.phase is Phase.RUNNING and (reason := request.over_budget() or self._out_of_room(request, branch)):
            self._finish(request, reason)

    def _fits(self, request: Request, branch: Branch, token: int) -> bool:
        """Whether placing `token` keeps the request's final positions within its cap (positions.py); a
        `</Goal>` that forks must fit its children's forced `<Path> LABEL :` too."""
        tags = self.vocab.tags
        if token == tags.goal_close:  # rare: once per block
            trial = replace(branch.state, outlines=[list(o) for o in branch.state.outlines])
            event = trial.step(token)
            if isinstance(event, Fork):
                lengths = [len(fork_prefix_ids(label, self.vocab)) for label in event.labels]
                return fork_reach(branch, event.goal_position, lengths) <= request.position_cap
        return reach_after(branch, token, tags) <= request.position_cap

    def _out_of_room(self, request: Request, branch: Branch) -> str | None:
        """The cap's reason when a branch this token touched (itself, the children it forked, the parent it merged
        into, a held-back sibling it let start) cannot place one more token: the request ends now, not a step later."""
        touched = [branch] + (branch.forks[-1][1] if branch.forks else [])
        if branch.parent is not None:
            touched += [branch.parent] + branch.parent.forks[-1][1]
        return request.cap_reason if any(no_room(b, request.position_cap) for b in touched) else None

    def _close_path(self, request: Request, branch: Branch, reason: str) -> None:
        """Force </Path> until the branch's scanner ends it (inner sequential paths it opened close first)."""
        branch.finish_reason = reason
        for _ in range(len(branch.tokens) + 1):
            if branch.status is not Status.RUNNING or request.phase is not Phase.RUNNING:
                return
            self._consume(request, branch, self.vocab.tags.path_close, None)

    def _consume(self, request: Request, branch: Branch, token: int, logprob: float | None) -> None:
        """Give one token (sampled or forced) a slot, step the branch's scanner on it, act on the event.

        The scanner steps only once the token's pages are secured: a request that yields (out_of_memory,
        preemption) leaves its scanner exactly at its last placed token, so closing it stays well formed.
        Only `</Goal>` can fork (and need pages for the children): its scanner step is taken on a copy first.
        """
        need = self.pool.pages_for(1, branch.tail_free)
        if token == self.vocab.tags.goal_close:
            trial = replace(branch.state, outlines=[list(o) for o in branch.state.outlines])  # rare: once per block
            event = trial.step(token)
            prefixes = [fork_prefix_ids(label, self.vocab) for label in event.labels] if isinstance(event, Fork) else []
            need += sum(self.pool.pages_for(len(p), 0) for p in prefixes)
            if not self._make_room(request, need):
                return
            branch.state = trial
        else:
            if not self._make_room(request, need):
                return
            event, prefixes = branch.state.step(token), []
        branch.push(self.pool, token, logprob)
        request.max_position = max(request.max_position, branch.state.position)
        self._emit_tokens(request, branch, [token], logprob is None)
        if isinstance(event, Fork):
            self._fork(request, branch, event, prefixes)
        elif isinstance(event, Fallback):
            request.fallbacks.append(event.reason)
        elif isinstance(event, PathEnd):
            self._path_end(request, branch, event)

    # ------------------------------------------------------------------ finish
    def _fail(self, request: Request, err: BaseException) -> None:
        """This request's fault: it ends with finish_reason "error"; its neighbours are untouched."""
        request.error = f"{type(err).__name__}: {err}"
        if request in self.waiting:
            self.waiting.remove(request)
        self._finish(request, "error")

    def _finish(self, request: Request, reason: str) -> None:
        """Pages first (so nothing can leak whatever fails after), then the well-formed result, then Finished."""
        request.finish_reason, request.phase, request.end_time = reason, Phase.FINISHED, time.perf_counter()
        for branch in request.branches():
            branch.release(self.pool)
            branch.pending_ids.clear()
            branch.pending_pos.clear()
        self.stops.pop(request.request_id, None)
        still_open = [(b, len(b.tokens)) for b in open_paths(request.root)] if request.root is not None else []
        try:
            if request.root is not None:
                request.max_position = max(request.max_position, reach(request.root))  # closing </Path>s included
                close_open_paths(request.root, self.vocab.tags.path_close, reason)
            request.output = request.build_output(self.codec)
        except Exception as err:  # noqa: BLE001 - a result must exist; say why it is empty
            request.finish_reason, request.error = "error", request.error or f"{type(err).__name__}: {err}"
            request.output = _bare_output(request)
        try:  # every opened path closes in the events too: its forced </Path> ids, then BranchClosed
            for branch, before in reversed(still_open):  # innermost first
                self._emit_tokens(request, branch, branch.tokens[before:], True)
                self._emit(request, BranchClosed(request.request_id, branch.label, reason))
        except Exception:  # noqa: BLE001 - the sink raised and was dropped; the request is over anyway
            pass
        self._emit(request, Finished(request.request_id, request.output))

    # ------------------------------------------------------------------ events
    def _emit(self, request: Request, event: Event) -> None:
        """To the request's own sink. A sink that raises is this request's fault: the error goes to the step's
        handler, which ends the request, and the sink still gets its one Finished (an error there is ignored,
        the request is over anyway)."""
        if request.sink is None:
            return
        try:
            request.sink(event)
        except Exception:
            if not isinstance(event, Finished):
                raise
            request.sink = None

    def _emit_tokens(self, request: Request, branch: Branch, tokens: list[int], forced: bool) -> None:
        if request.sink is not None:  # decode only for a listener
            self._emit(request, Tokens(request.request_id, branch.label, tuple(tokens), self.decode(tokens), forced))


def _bare_output(request: Request) -> RequestOutput:
    stats = Stats(request.num_generated, 0, request.critical_path, 1.0, 0.0, 0.0, request.num_forks, request.num_merges)
    return RequestOutput(
        request.request_id, list(request.prompt_ids), "", [], None, request.finish_reason or "error", [], stats,
        request.seed, error=request.error,
    )
