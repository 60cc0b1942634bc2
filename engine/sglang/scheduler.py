"""The native scheduler with the model forward replaced by SGLang calls: one logic for stops, budgets, SPEC §6
fallbacks, forks, merges, stream events and results, whichever engine computes the tokens.

`step()` is the native step with `runner.forward + sample` swapped for `Segments.fetch`: every running branch
takes its next token from its segment (one batched `/generate` for all that need a new one), closed paths
get their `</Path>` KV computed on the server, then each token goes through the native `_on_token`. The local
KV pool only counts slots (one float per slot): the KV lives on the server.
"""
from __future__ import annotations

from dataclasses import replace

from engine.branch import Status
from engine.events import Event, Finished
from engine.request import Phase, Request
from engine.result import RequestOutput
from engine.scheduler import Scheduler
from engine.sglang.segments import Segments


class RemoteScheduler(Scheduler):
    segments: Segments  # set by the client right after construction

    def step(self) -> list[Request]:
        finished = self._admit()
        rows = [(r, b) for r in self.running for b in r.branches() if b.pending_ids]
        if rows:
            samplers = [(r, b) for r, b in rows if b.status is Status.RUNNING]
            closing = [(r, b) for r, b in rows if b.status is not Status.RUNNING and self._closes(b)]
            errors = self.segments.fetch(samplers, closing)
            for _, branch in rows:
                branch.pending_ids.clear()
                branch.pending_pos.clear()
                branch.prefill_mask = None
            for request, branch in samplers:
                if request.phase is not Phase.RUNNING:
                    continue
                if request.request_id in errors:  # one bad request never harms another
                    self.errors[request.request_id] = errors[request.request_id]
                    self._finish(request, "abort")
                    continue
                token, logprob = self.segments.take(branch)
                self._on_token(request, branch, token, logprob)
        finished += [r for r in self.running if r.phase is Phase.FINISHED]
        self.running = [r for r in self.running if r.phase is Phase.RUNNING]
        if self.config.check_integrity:
            self.check_integrity()
        return finished

    @property
    def errors(self) -> dict[int, str]:
        if not hasattr(self, "_errors"):
            self._errors: dict[int, str] = {}
        return self._errors

    def _closes(self, branch) -> bool:  # noqa: ANN001 - a Branch
        """A path whose pending tokens end with its `</Path>`: the server must hold that KV before the merge."""
        return branch.parent is not None and branch.pending_ids[-1:] == [self.vocab.tags.path_close]

    def _finish(self, request: Request, reason: str) -> None:
        super()._finish(request, reason)
        request.output = self._with_counts(request.output)
        self.segments.forget(request)

    def _emit(self, event: Event) -> None:
        if isinstance(event, Finished):  # the result carries this backend's merge counts (stats)
            event = Finished(event.request_id, self._with_counts(event.output))
        super()._emit(event)

    def _with_counts(self, output: RequestOutput) -> RequestOutput:
        counts = self.segments.counts(output.request_id)
        stats = replace(output.stats, merges_exact=counts.exact, merges_recomputed=counts.recomputed,
                        merges_reissued=counts.reissued, merge_prefill_tokens=list(counts.prefilled))
        return replace(output, stats=stats)
