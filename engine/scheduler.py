"""Continuous batching over requests and branches, with fork and merge per SPEC §5 and the limits of §6.

One step = admit -> ONE forward over every branch with pending tokens (prefills, decodes, forced tokens) ->
sample every running branch -> apply each token (stops, budgets, fork, path end, merge) -> retire finished
requests. Memory: a request is admitted while `reserve_pages` stay free; when a step needs a page and none is
free, the newest request that is younger than the one in need is preempted (freed entirely and requeued; it
restarts with the same seed and reproduces its output). The oldest running request therefore always
progresses; if it alone cannot fit, it finishes with `out_of_memory`. No path leaks pages: `check_integrity`.

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

from engine import path_cap, refresh
from engine.branch import Branch, Status
from engine.structure_mask import StructureGuard
from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.events import BranchClosed, BranchOpened, Event, Finished, Merged, Restarted, Tokens
from engine.kv_pool import KVPool
from engine.request import Phase, Request, close_open_paths, open_paths
from engine.result import RequestOutput, Stats
from engine.runner import ModelRunner
from engine.chunking import admission_budget, plan_step
from engine.positions import closers, fork_reach, no_room, position_cap, reach, reach_after
from engine.sampling import sample
from engine.stops import StopChecker
from multiverse.attention import layout
from multiverse.attention.scanner import Fallback, Fork, PathEnd
from multiverse.encode import fork_prefix_ids
from multiverse.tags import StructureVocab


class EngineError(RuntimeError):
    """A step failed for every request in it (the shared forward raised); those requests finished "error"."""


class Scheduler:
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

    # ------------------------------------------------------------------ admission and memory
    def _admit(self) -> list[Request]:
        """Start waiting requests in order; one that does not fit is skipped (younger ones may pass it) until
        it has been passed `admission_skip_limit` times, then it blocks the queue until it fits."""
        done: list[Request] = []
        budget = self._admission_budget()
        capacity = self.pool.num_pages - self.config.reserve_pages
        free = self.pool.num_free - self.config.reserve_pages
        blocked: list[Request] = []
        for request in list(self.waiting):
            if len(self.running) >= self.config.max_running or budget <= 0:
                break  # a prompt starts only if the step's token budget has room for its first chunk
            n = len(request.prompt_ids)
            need = self.pool.pages_for(n, 0)
            if need > capacity:  # can never fit, whatever finishes: refuse instead of waiting forever
                self.waiting.remove(request)
                self._finish(request, "out_of_memory")
                done.append(request)
                continue
            if need > free:
                blocked.append(request)
                if request.num_skips >= self.config.admission_skip_limit:
                    break  # it waited long enough: nothing younger passes it now
                continue
            self.waiting.remove(request)
            for older in blocked:
                older.num_skips += 1
            budget -= n
            free -= need
            try:
                self._start(request)
            except Exception as err:  # noqa: BLE001 - e.g. its events' sink raised: it alone ends
                self._fail(request, err)
                done.append(request)
        return done

    def _admission_budget(self) -> int:
        return admission_budget(self.running, self.config.max_batch_tokens)

    def _start(self, request: Request) -> None:
        if request.num_preemptions:
            self._emit(request, Restarted(request.request_id))
        root = request.start(self.vocab)
        if request.params.structure == "constrained":
            root.guard = StructureGuard(self.vocab, root.state.rules, self.eos_ids)
        for token in request.prompt_ids:
            root.state.step(token)  # the prompt sets the scanner's phase; the engine never forks inside it
            root.push(self.pool, token, None)
        lay = layout(request.prompt_ids, self.vocab, rules=request.rules)
        if bool((lay.hidden_hi > lay.hidden_lo).any()) or lay.fallbacks:
            # The prompt holds complete forked blocks (e.g. an earlier answer): prefill it with the core's
            # positions and mask, exactly as training lays it out; what follows sees the whole prompt.
            root.pending_pos = lay.positions.tolist()
            root.state.position = root.pending_pos[-1]
            root.prefill_mask = lay.dense()
        request.prompt_position = root.state.position
        request.max_position = root.state.position
        request.position_cap, request.cap_reason = position_cap(
            root.state.position, request.params.max_critical_tokens, self.max_positions
        )
        self.running.append(request)

    def _make_room(self, request: Request, pages: int) -> bool:
        """Free `pages` by preempting requests admitted after `request`; False if `request` must yield."""
        while self.pool.num_free < pages:
            index = self.running.index(request)
            younger = [r for r in self.running[index + 1 :] if r.phase is Phase.RUNNING]
            if not younger:
                if any(r.phase is Phase.RUNNING for r in self.running[:index]):
                    self._preempt(request)
                else:
                    self._finish(request, "out_of_memory")
                return False
            self._preempt(younger[-1])
        return True

    def _preempt(self, request: Request) -> None:
        for branch in request.branches():
            branch.release(self.pool)
        request.phase = Phase.WAITING
        request.num_preemptions += 1
        self.running.remove(request)
        self.waiting.appendleft(request)

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

    def _fork(self, request: Request, parent: Branch, event: Fork, prefixes: list[list[int]]) -> None:
        """Children share the parent's pages (its </Goal> included) and start with <Path> LABEL ":" forced.

        Exception-safe: the children are attached to the tree only when all of them are built; if building
        one fails (e.g. no page for its prefix), every page reference taken so far is dropped again.
        """
        children: list[Branch] = []
        confidences = [1.0] * len(prefixes)  # label order unless a cap asks for the outlines' confidences
        if path_cap.capped(request.params):
            found = path_cap.outline_confidences(parent.tokens, parent.logprobs, self.vocab.tags)
            confidences = found if len(found) == len(prefixes) else confidences
        order, limit = path_cap.plan(confidences, request.params)
        held = set(order[limit:]) if limit is not None else set()
        try:
            for i, (label, prefix) in enumerate(zip(event.labels, prefixes)):
                child = parent.fork_child(self.pool, label, parent.state.child(event.goal_position))
                children.append(child)
                child.key = f"{parent.key}>{len(parent.forks)}/{label}" if parent.key else f"{len(parent.forks)}/{label}"
                child.generator = request.generator_for(child.key)
                child.prefix = prefix
                child.guard = parent.guard.child(label) if parent.guard is not None else None
                child.owed = parent.owed + closers(parent)
                if i in held:
                    child.status = Status.DEFERRED
                else:
                    self._place_prefix(child)
        except BaseException:
            for child in children:
                child.release(self.pool)
            raise
        parent.status = Status.WAITING
        parent.forks.append((len(parent.tokens), children))
        parent.queue = [children[i] for i in order if i in held]
        request.num_forks += 1
        for child in children:
            self._emit(request, BranchOpened(request.request_id, child.label, parent.label))
            if child.status is not Status.DEFERRED:
                self._started(request, child)

    def _place_prefix(self, child: Branch) -> None:
        for token in child.prefix:
            child.state.step(token)
            child.push(self.pool, token, None)

    def _started(self, request: Request, child: Branch) -> None:
        request.max_position = max(request.max_position, child.state.position)
        self._emit_tokens(request, child, child.prefix, True)

    def _start_held(self, request: Request, parent: Branch) -> None:
        """A path closed: the next held-back sibling starts (its forced prefix gets pages and decodes next step)."""
        if not parent.queue:
            return
        child = parent.queue[0]
        if not self._make_room(request, self.pool.pages_for(len(child.prefix), 0)):
            return
        parent.queue.pop(0)
        child.status = Status.RUNNING
        self._place_prefix(child)
        self._started(request, child)

    def _path_end(self, request: Request, branch: Branch, event: PathEnd) -> None:
        branch.end_position = event.position
        branch.status = Status.CLOSING
        branch.finish_reason = branch.finish_reason or "path_end"
        self._emit(request, BranchClosed(request.request_id, branch.label, branch.finish_reason))
        parent = branch.parent
        siblings = parent.forks[-1][1]
        self._start_held(request, parent)
        if request.phase is Phase.RUNNING and all(s.status is Status.CLOSING for s in siblings):
            self._merge(request, parent, siblings)

    def _merge(self, request: Request, parent: Branch, children: list[Branch]) -> None:
        """Parent reads prefix + child 1 + ... + child n (KV as computed); <Conclusion> forced at m + 1."""
        if request.params.merge == "refresh":
            return self._merge_refresh(request, parent, children)
        m = max(c.end_position for c in children)
        if m + 1 + closers(parent) + parent.owed > request.position_cap:  # no room for <Conclusion>
            self._finish(request, request.cap_reason)
            return
        if not self._make_room(request, self.pool.pages_for(1, children[-1].tail_free)):
            return
        parent.absorb(self.pool, children)
        for child in children:
            child.status = Status.DONE
        parent.state.merged(m)
        parent.status = Status.RUNNING
        request.num_merges += 1
        self._emit(request, Merged(request.request_id, parent.label, tuple(c.label for c in children)))
        self._consume(request, parent, self.vocab.tags.conclusion_open, None)

    def _merge_refresh(self, request: Request, parent: Branch, children: list[Branch]) -> None:
        """merge="refresh" (engine/refresh.py): the children's KV is dropped, the joined paths are re-encoded."""
        tokens = refresh.joined(children)
        if parent.state.position + len(tokens) + 1 + closers(parent) + parent.owed > request.position_cap:
            self._finish(request, request.cap_reason)  # the re-encoded paths and <Conclusion> would pass the cap
            return
        for child in children:  # its last </Path> may still be pending: it is re-encoded, never written to its slot
            child.release(self.pool)
            child.pending_ids.clear()
            child.pending_pos.clear()
            child.status = Status.DONE
        if not self._make_room(request, self.pool.pages_for(len(tokens) + 1, parent.tail_free)):
            return
        last = refresh.reencode(self.pool, parent, tokens)
        parent.state.merged(last)
        parent.status = Status.RUNNING
        request.num_merges += 1
        request.refreshed_tokens.append(len(tokens))
        self._emit(request, Merged(request.request_id, parent.label, tuple(c.label for c in children)))
        self._consume(request, parent, self.vocab.tags.conclusion_open, None)

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
