"""The native scheduler with the model forward replaced by SGLang calls: one logic for stops, budgets, SPEC §6
fallbacks, forks, merges, stream events and results, whichever engine computes the tokens.

`step()` is the native step with `runner.forward + sample` swapped for `Segments.fetch`: every running branch
takes its next token from its segment (one batched `/generate` for all that need a new one), closed paths
get their `</Path>` KV computed on the server, then each token goes through the native `_on_token`. The local
KV pool only counts slots (one float per slot): the KV lives on the server.
"""
from __future__ import annotations

from dataclasses import replace

from engine.branch import Branch, Status
from engine.events import Event, Finished
from engine.request import Phase, Request
from engine.result import RequestOutput
from engine.scheduler import EngineError, Scheduler
from engine.sglang.http import ServerError
from engine.sglang.segments import Segments


class RemoteScheduler(Scheduler):
    segments: Segments  # set by the client right after construction

    def step(self) -> list[Request]:
        finished = self._admit()
        rows = [(r, b) for r in self.running for b in r.branches() if b.pending_ids]
        if rows:
            samplers = [(r, b) for r, b in rows if b.status is Status.RUNNING]
            closing = [(r, b) for r, b in rows if b.status is not Status.RUNNING and self._closes(b)]
            try:
                errors = self.segments.fetch(samplers, closing)
            except ServerError as err:  # the server is unreachable or refused the call: this step's requests end
                failed = list({id(r): r for r, _ in rows}.values())
                for request in failed:
                    self._fail(request, err)
                self.running = [r for r in self.running if r.phase is Phase.RUNNING]
                raise EngineError(f"a SGLang call of a step failed ({len(failed)} requests ended): {err}") from err
            for _, branch in rows:
                branch.pending_ids.clear()
                branch.pending_pos.clear()
                branch.prefill_mask = None
            for request, branch in samplers:
                if request.phase is not Phase.RUNNING:
                    continue
                try:
                    if request.request_id in errors:  # one bad request never harms another
                        raise ServerError(errors[request.request_id])
                    self._on_token(request, branch, *self.segments.take(branch))
                except Exception as err:  # noqa: BLE001 - this request's fault: it alone ends
                    self._fail(request, err)
        finished += [r for r in self.running if r.phase is Phase.FINISHED]
        self.running = [r for r in self.running if r.phase is Phase.RUNNING]
        if self.config.check_integrity:
            self.check_integrity()
        return finished

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
                        merges_reissued=counts.reissued, merge_prefill_tokens=list(counts.prefilled))
        return replace(output, stats=stats)
