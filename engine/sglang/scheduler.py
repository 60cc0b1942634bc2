"""The native scheduler with the model forward replaced by SGLang calls: one logic for stops, budgets, SPEC §6
fallbacks, forks, merges, stream events and results, whichever engine computes the tokens.

`step()` is the native step with `runner.forward + sample` swapped for `Segments.prepare`: every running branch
takes its next token from its segment (the calls a step needs go out as one batched `/generate`), closed paths
get their `</Path>` KV computed on the server, then each token goes through the native `_on_token`. A request
whose calls are still in flight sits the step out (all its branches: they stay in lock step, so its output is
the native one); the others go on. A call that failed for good (the wire retried it) ends the requests with
an input in it, with finish_reason "error" and the cause in `error`; no other request notices. The local
KV pool only counts slots (one float per slot): the KV lives on the server.
"""
from __future__ import annotations

from dataclasses import replace

from engine.branch import Branch, Status
from engine.events import Event, Finished
from engine.request import Phase, Request
from engine.result import RequestOutput
from engine.scheduler import Scheduler
from engine.sglang.http import ServerError
from engine.sglang.segments import Segments


class RemoteScheduler(Scheduler):
    segments: Segments  # set by the client right after construction

    def step(self) -> list[Request]:
        finished = self._admit()
        rows = {}
        for r in self.running:
            mine = [b for b in r.branches() if b.pending_ids]
            if mine:
                samplers = [b for b in mine if b.status is Status.RUNNING]
                rows[r.request_id] = (r, samplers, [b for b in mine if b.status is not Status.RUNNING and self._closes(b)])
        ready = self.segments.prepare(rows) if rows else set()
        for rid in ready:
            request, samplers, _ = rows[rid]
            for branch in request.branches():  # this request steps: its pending tokens are on the server now
                branch.pending_ids.clear()
                branch.pending_pos.clear()
                branch.prefill_mask = None
            problem = self.segments.error(request)
            if problem is not None:  # its call failed or the server refused it: it alone ends
                self._fail(request, ServerError(problem))
                continue
            for branch in samplers:
                if request.phase is not Phase.RUNNING:
                    break
                try:
                    token, logprob, fork = self.segments.take(branch)
                    if fork is not None:  # a drawn <Parallel>, kept or vetoed (stats.fork_acceptance_rate)
                        request.fork_proposals += 1
                        request.fork_accepted += int(fork)
                    self._on_token(request, branch, token, logprob)
                except Exception as err:  # noqa: BLE001 - this request's fault: it alone ends
                    self._fail(request, err)
        return self._retire(finished)

    def _admission_budget(self) -> int:
        """The server chunks prompts itself: a fresh budget of prompt tokens every step (none given: 4096)."""
        return self.config.max_batch_tokens or 4096

    def _closes(self, branch: Branch) -> bool:
        """A path whose pending tokens end with its `</Path>`: the server must hold that KV before the merge."""
        return branch.parent is not None and branch.pending_ids[-1:] == [self.vocab.tags.path_close]

    def _finish(self, request: Request, reason: str) -> None:
        super()._finish(request, reason)
        request.output = self._with_counts(request.output)
        self.segments.forget(request)

    def _emit(self, request: Request, event: Event) -> None:
        if isinstance(event, Finished):  # the result carries this backend's merge counts (stats)
            event = Finished(event.request_id, self._with_counts(event.output))
        super()._emit(request, event)

    def _with_counts(self, output: RequestOutput) -> RequestOutput:
        counts = self.segments.counts(output.request_id)
        stats = replace(output.stats, merges_exact=counts.exact, merges_recomputed=counts.recomputed,
                        merges_reissued=counts.reissued,
                        paths_reprefilled=counts.rebuilt, merge_prefill_tokens=list(counts.prefilled))
        return replace(output, stats=stats)
