"""Continuous batching over requests and branches, with fork and merge per SPEC §5 and the limits of §6.

One step = admit -> ONE forward over every branch with pending tokens (prefills, decodes, forced tokens) ->
sample every running branch -> apply each token (stops, budgets, fork, path end, merge) -> retire finished
requests. Memory: a request is admitted while `reserve_pages` stay free; when a step needs a page and none is
free, the newest request that is younger than the one in need is preempted (freed entirely and requeued; it
restarts with the same seed and reproduces its output). The oldest running request therefore always
progresses; if it alone cannot fit, it finishes with `out_of_memory`. No path leaks pages: `check_integrity`.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from engine.branch import Branch, Status
from engine.config import EngineConfig
from engine.events import BranchClosed, BranchOpened, Event, Finished, Merged, Restarted, Tokens
from engine.kv_pool import KVPool
from engine.request import Phase, Request, close_open_paths
from engine.runner import ModelRunner
from engine.sampling import sample
from engine.stops import StopChecker
from multiverse.attention import layout
from multiverse.attention.scanner import Fallback, Fork, PathEnd
from multiverse.encode import fork_prefix_ids
from multiverse.tags import StructureVocab


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        pool: KVPool,
        config: EngineConfig,
        vocab: StructureVocab,
        eos_ids: frozenset[int],
        decode: Callable[[list[int]], str],
    ) -> None:
        self.runner, self.pool, self.config, self.vocab = runner, pool, config, vocab
        self.eos_ids, self.decode = eos_ids, decode
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.stops: dict[int, StopChecker] = {}
        self.events: list[Event] | None = None  # a list collects stream events; None skips them

    # ------------------------------------------------------------------ public
    def add(self, request: Request) -> None:
        if not request.prompt_ids:
            raise ValueError(f"request {request.request_id}: empty prompt (at least one token is needed)")
        p = request.params
        self.stops[request.request_id] = StopChecker(p.stop, p.stop_token_ids, self.decode)
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, request_id: int) -> Request | None:
        """Finish a request now (waiting or mid-branch); every page it held returns to the pool."""
        for request in list(self.waiting) + self.running:
            if request.request_id == request_id:
                if request in self.waiting:
                    self.waiting.remove(request)
                self._finish(request, "abort")
                self.running = [r for r in self.running if r is not request]
                return request
        return None

    def step(self) -> list[Request]:
        """Run one engine step; returns the requests that finished in it."""
        finished = self._admit()
        rows = [(r, b) for r in self.running for b in r.branches() if b.pending_ids]
        if rows:
            samplers = [(r, b) for r, b in rows if b.status is Status.RUNNING]
            logits = self.runner.forward([b for _, b in rows], [b.status is Status.RUNNING for _, b in rows])
            for _, branch in rows:
                branch.pending_ids.clear()
                branch.pending_pos.clear()
                branch.prefill_mask = None
            tokens, logprobs = sample(logits, [b for _, b in samplers], [r.params for r, _ in samplers])
            for (request, branch), token, logprob in zip(samplers, tokens, logprobs):
                if request.phase is Phase.RUNNING:
                    self._on_token(request, branch, token, logprob)
        finished += [r for r in self.running if r.phase is Phase.FINISHED]
        self.running = [r for r in self.running if r.phase is Phase.RUNNING]
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
        rejected: list[Request] = []
        budget = self.config.max_batch_tokens
        while self.waiting and len(self.running) < self.config.max_running:
            request = self.waiting[0]
            n = len(request.prompt_ids)
            need = self.pool.pages_for(n, 0)
            if need > self.pool.num_pages - self.config.reserve_pages and not self.running:
                self.waiting.popleft()  # can never fit: refuse instead of waiting forever
                self._finish(request, "out_of_memory")
                rejected.append(request)
                continue
            if need + self.config.reserve_pages > self.pool.num_free or (self.running and n > budget):
                break
            self.waiting.popleft()
            budget -= n
            self._start(request)
        return rejected

    def _start(self, request: Request) -> None:
        if request.num_preemptions:
            self._emit(Restarted(request.request_id))
        root = request.start(self.vocab)
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
        request.num_generated += 1
        is_eos = token in self.eos_ids and not request.params.ignore_eos
        if is_eos and branch.parent is not None:
            self._close_path(request, branch, "eos")  # EOS inside a path closes it: forced </Path> replaces it
        else:
            self._consume(request, branch, token, logprob)
            if request.phase is not Phase.RUNNING:
                return
            start = len(request.prompt_ids) if branch.parent is None else 0
            stop = self.stops[request.request_id].check(branch.tokens, start) if not is_eos else None
            if is_eos or (stop and branch.parent is None):
                request.stop_string = stop if stop not in (None, "id") else None
                self._finish(request, "stop")
            elif stop and branch.status is Status.RUNNING:
                self._close_path(request, branch, "stop")
        if request.phase is Phase.RUNNING and (reason := request.over_budget()):
            self._finish(request, reason)

    def _close_path(self, request: Request, branch: Branch, reason: str) -> None:
        """Force </Path> until the branch's scanner ends it (inner sequential paths it opened close first)."""
        branch.finish_reason = reason
        for _ in range(len(branch.tokens) + 1):
            if branch.status is not Status.RUNNING or request.phase is not Phase.RUNNING:
                return
            self._consume(request, branch, self.vocab.tags.path_close, None)

    def _consume(self, request: Request, branch: Branch, token: int, logprob: float | None) -> None:
        """Step the branch's scanner on one token (sampled or forced), give it a slot, act on the event."""
        event = branch.state.step(token)
        need = self.pool.pages_for(1, branch.tail_free)
        prefixes: list[list[int]] = []
        if isinstance(event, Fork):
            prefixes = [fork_prefix_ids(label, self.vocab) for label in event.labels]
            need += sum(self.pool.pages_for(len(p), 0) for p in prefixes)
        if not self._make_room(request, need):
            return
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
        """Children share the parent's pages (its </Goal> included) and start with <Path> LABEL ":" forced."""
        parent.status = Status.WAITING
        children = []
        for label, prefix in zip(event.labels, prefixes):
            child = parent.fork_child(self.pool, label, parent.state.child(event.goal_position))
            child.generator = request.generator_for(f"{request.num_forks}/{label}")
            for token in prefix:
                child.state.step(token)
                child.push(self.pool, token, None)
            request.max_position = max(request.max_position, child.state.position)
            children.append(child)
            self._emit(BranchOpened(request.request_id, label, parent.label))
            self._emit_tokens(request, child, prefix, True)
        parent.forks.append((len(parent.tokens), children))
        request.num_forks += 1

    def _path_end(self, request: Request, branch: Branch, event: PathEnd) -> None:
        branch.end_position = event.position
        branch.status = Status.CLOSING
        branch.finish_reason = branch.finish_reason or "path_end"
        self._emit(BranchClosed(request.request_id, branch.label, branch.finish_reason))
        parent = branch.parent
        siblings = parent.forks[-1][1]
        if all(s.status is Status.CLOSING for s in siblings):
            self._merge(request, parent, siblings)

    def _merge(self, request: Request, parent: Branch, children: list[Branch]) -> None:
        """Parent reads prefix + child 1 + ... + child n (KV as computed); <Conclusion> forced at m + 1."""
        if not self._make_room(request, self.pool.pages_for(1, children[-1].tail_free)):
            return
        parent.absorb(self.pool, children)
        for child in children:
            child.status = Status.DONE
        parent.state.merged(max(c.end_position for c in children))
        parent.status = Status.RUNNING
        request.num_merges += 1
        self._emit(Merged(request.request_id, parent.label, tuple(c.label for c in children)))
        self._consume(request, parent, self.vocab.tags.conclusion_open, None)

    def _finish(self, request: Request, reason: str) -> None:
        request.finish_reason, request.phase, request.end_time = reason, Phase.FINISHED, time.perf_counter()
        if request.root is not None:
            close_open_paths(request.root, self.vocab.tags.path_close, reason)
            for branch in request.branches():
                branch.release(self.pool)
                branch.pending_ids.clear()
                branch.pending_pos.clear()
        request.output = request.build_output(self.decode, self.vocab)
        self.stops.pop(request.request_id, None)
        self._emit(Finished(request.request_id, request.output))

    # ------------------------------------------------------------------ stream events
    def _emit(self, event: Event) -> None:
        if self.events is not None:
            self.events.append(event)

    def _emit_tokens(self, request: Request, branch: Branch, tokens: list[int], forced: bool) -> None:
        if self.events is not None:
            self.events.append(Tokens(request.request_id, branch.label, tuple(tokens), self.decode(tokens), forced))
