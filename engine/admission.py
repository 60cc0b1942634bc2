"""Admission and memory pressure for the Scheduler: which waiting request starts, and who yields a page.

Invariants (SPEC §5 memory, engine README "Admission"):
- waiting requests start in order while `reserve_pages` stay free and the step's token budget has room for a
  first chunk; one that does not fit is passed by younger ones at most `admission_skip_limit` times, then
  nothing behind it starts until it does (no head-of-line blocking, no starvation);
- a prompt needing more pages than the whole pool (less the reserve) is refused at once (`out_of_memory`);
- when a step needs pages, only requests admitted AFTER the one in need are preempted (freed entirely and put
  back at the head of `waiting`), so the oldest running request always progresses; if it alone cannot fit it
  finishes with `out_of_memory`.

`AdmissionMixin` is a part of `engine.scheduler.Scheduler` (as is `engine.forking.ForkMergeMixin`);
it holds no state of its own and works on the scheduler's `pool`, `config`, `waiting` and `running`.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from engine.chunking import admission_budget
from engine.config import EngineConfig
from engine.events import Event, Restarted
from engine.kv_pool import KVPool
from engine.positions import position_cap
from engine.request import Phase, Request
from engine.structure_mask import StructureGuard
from multiverse.attention import layout
from multiverse.tags import StructureVocab


class AdmissionMixin:
    """Starting requests (`_admit`, `_start`) and freeing pages under pressure (`_make_room`, `_preempt`)."""

    pool: KVPool
    config: EngineConfig
    vocab: StructureVocab
    eos_ids: frozenset[int]
    max_positions: int | None
    waiting: deque[Request]
    running: list[Request]

    if TYPE_CHECKING:  # provided by Scheduler
        def _finish(self, request: Request, reason: str) -> None: ...
        def _fail(self, request: Request, err: BaseException) -> None: ...
        def _emit(self, request: Request, event: Event) -> None: ...

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
