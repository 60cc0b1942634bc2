"""The async engine client: routes hand it requests, one thread owns the engine and runs its steps.

Routes never touch engine state. `EngineClient.submit(ids, params)` returns a `JobHandle`; iterating it yields
`Delta` (ids that became stable in final merged order) then one `Done` (the RequestOutput) or one `Failed`.
`handle.close()` aborts the request if it has not finished (client gone, shutdown): its KV is freed at once.

Fault isolation: a request the engine refuses (`lm.submit` raises) fails alone with 400; a fault inside a
step finishes that request alone (the engine's contract). If the loop dies anyway, the client turns
unhealthy (`/health` answers 503), every open request gets `Failed(503)` and new ones are refused.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.events import Event, Finished, Tokens
from engine.params import SamplingParams
from engine.request import Request
from engine.result import RequestOutput
from engine.scheduler import EngineError
from engine.server.sequential import decode_sequentially
from engine.server.stable import StableOrder
from engine.stops import holdback_for

log = logging.getLogger("multiverse.serve")


@dataclass(frozen=True)
class Delta:
    ids: list[int]  # newly stable generated ids, final merged order


@dataclass(frozen=True)
class Done:
    output: RequestOutput
    request: Request


@dataclass(frozen=True)
class Failed:
    status: int  # HTTP status to answer with
    message: str


Update = Delta | Done | Failed


@dataclass(eq=False)
class _Job:
    ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    sequential: bool = False  # never fork while decoding (SGLang's /generate), prompt layout unchanged
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)
    order: StableOrder = field(default_factory=StableOrder)
    request: Request | None = None
    output: RequestOutput | None = None  # set by the Finished event (engine thread)
    over: bool = False  # Done or Failed posted (engine thread); nothing follows
    submitted_at: float = field(default_factory=time.perf_counter)
    first_at: float | None = None


class JobHandle:
    """One request as the route sees it: `async for update in handle`, then `close()` (idempotent)."""

    def __init__(self, client: "EngineClient", job: _Job) -> None:
        self._client, self._job = client, job
        self._ended = False

    @property
    def holdback(self) -> int:
        """Characters a stream of this request withholds until it finishes (a stop string may be forming)."""
        return holdback_for(self._job.params.stop)

    def __aiter__(self) -> "JobHandle":
        return self

    async def __anext__(self) -> Update:
        if self._ended:
            raise StopAsyncIteration
        update = await self._job.updates.get()
        self._ended = not isinstance(update, Delta)
        return update

    async def result(self) -> Done | Failed:
        async for update in self:
            if not isinstance(update, Delta):
                return update
        raise RuntimeError("a job ended without Done or Failed")  # unreachable: every job ends with one

    def close(self) -> None:
        """Abort the request unless it already ended; its pages return to the pool in the engine thread."""
        if not self._ended:
            self._ended = True
            self._client._command(("abort", self._job))


class EngineClient:
    def __init__(self, lm: Any, metrics: Any = None, idle_poll_s: float = 0.05) -> None:
        self.lm, self.metrics, self.idle_poll_s = lm, metrics, idle_poll_s
        self.error: str | None = None  # why the loop died; None while healthy
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "submit after death" against "death drains the inbox"
        self._jobs: set[_Job] = set()  # submitted, not over (engine thread only)
        self._dirty: set[_Job] = set()
        self._admitting = True
        self._thread = threading.Thread(target=self._run, name="multiverse-engine", daemon=True)

    # ------------------------------------------------------------------ route side (event loop thread)
    def start(self) -> "EngineClient":
        self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        return self.error is None and self._thread.is_alive()

    def submit(self, ids: list[int], params: SamplingParams, sequential: bool = False) -> JobHandle:
        job = _Job(list(ids), params, asyncio.get_running_loop(), sequential)
        if not self._command(("submit", job)):
            job.updates.put_nowait(Failed(503, self.error or "the server is shutting down"))
            job.over = True
        return JobHandle(self, job)

    def stop_admitting(self) -> None:
        """New requests get 503 from now on; running ones continue (graceful shutdown's first step)."""
        self._admitting = False

    def close(self, timeout: float = 10.0) -> None:
        """Stop admitting, abort what runs (each gets its Done with reason abort), stop the thread."""
        self._admitting = False
        if self._thread.is_alive():
            self._command(("stop", None), force=True)
            self._thread.join(timeout)

    def _command(self, cmd: tuple[str, Any], force: bool = False) -> bool:
        with self._lock:
            if self.error is not None or (not self._admitting and not force and cmd[0] == "submit"):
                return False
            self._inbox.put(cmd)
            return True

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        try:
            while self._drain(block=not self.lm.has_work()):
                if self.lm.has_work():
                    self._step()
                self._flush()
        except BaseException as err:  # noqa: BLE001 - a dead loop must not leave anyone waiting
            self._die(f"engine loop stopped: {type(err).__name__}: {err}")
            log.exception("engine loop stopped")

    def _step(self) -> None:
        try:
            finished = self.lm.step()
        except EngineError as err:  # the shared forward failed: that step's requests ended "error", go on
            log.error("engine step failed (its requests end with an error): %s", err)
            return
        for request in finished:  # normally already over through its Finished event
            self._settle(request)

    def _drain(self, block: bool) -> bool:
        """Apply queued commands; False once told to stop. Blocks briefly when the engine is idle."""
        while True:
            try:
                kind, job = self._inbox.get(timeout=self.idle_poll_s) if block else self._inbox.get_nowait()
            except queue.Empty:
                return True
            block = False
            if kind == "submit":
                self._admit(job)
            elif kind == "abort":
                self._abort(job)
            elif kind == "stop":
                for job in list(self._jobs):
                    self._abort(job)
                self._flush()
                return False

    def _admit(self, job: _Job) -> None:
        try:
            job.request = self.lm.submit(job.ids, job.params, sink=self._sink(job))
            if job.sequential:
                decode_sequentially(job.request)  # before any step: the request has not started yet
        except (TypeError, ValueError) as err:  # this request's input: it fails alone
            self._post(job, Failed(400, str(err)))
            return
        except Exception as err:  # noqa: BLE001 - any other refusal fails this request alone too
            self._post(job, Failed(500, f"{type(err).__name__}: {err}"))
            return
        self._jobs.add(job)

    def _abort(self, job: _Job) -> None:
        if job.request is not None and not job.over:
            self.lm.abort(job.request.request_id)  # emits Finished(abort) through the sink
            if self.metrics is not None:
                self.metrics.aborted()
            self._settle(job.request)

    def _sink(self, job: _Job) -> Callable[[Event], None]:
        def on_event(event: Event) -> None:
            if isinstance(event, Finished):
                job.output = event.output
            else:
                job.order = job.order.apply(event)
                if job.first_at is None and isinstance(event, Tokens) and not event.forced:
                    job.first_at = time.perf_counter()
            self._dirty.add(job)

        return on_event

    def _settle(self, request: Request) -> None:
        for job in [j for j in self._jobs if j.request is request and j.output is None]:
            job.output = request.output  # a finish that reached us without its event
            self._dirty.add(job)

    def _flush(self) -> None:
        """Post what each touched job gained this step: new stable ids, or its result."""
        for job in self._dirty:
            if job.over:
                continue
            if job.output is not None:
                self._post(job, Done(job.output, job.request))
                self._jobs.discard(job)
            elif ids := job.order.take():
                self._post(job, Delta(ids))
        self._dirty.clear()
        if self.metrics is not None:
            s = self.lm.scheduler
            self.metrics.engine_state(len(s.running), len(s.waiting), self.lm.pool.num_used)

    def _post(self, job: _Job, update: Update) -> None:
        if not isinstance(update, Delta):
            job.over = True
            if self.metrics is not None and isinstance(update, Done):
                self.metrics.finished(job, update.output)
        try:
            job.loop.call_soon_threadsafe(job.updates.put_nowait, update)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is waiting
            pass

    def _die(self, reason: str) -> None:
        with self._lock:
            self.error = reason
            pending = [job for kind, job in _drain_all(self._inbox) if kind == "submit"]
        for job in list(self._jobs) + pending:
            if not job.over:
                self._post(job, Failed(503, reason))
        self._jobs.clear()


def _drain_all(inbox: queue.SimpleQueue) -> list[tuple[str, Any]]:
    out = []
    while True:
        try:
            out.append(inbox.get_nowait())
        except queue.Empty:
            return out
