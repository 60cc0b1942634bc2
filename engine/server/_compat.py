"""TEMPORARY: the per-request engine contract on the old MultiverseLM (removed once branch engine lands)."""
from __future__ import annotations

from engine.events import Finished


class Compat:
    def __init__(self, lm):
        self.lm, self.sinks = lm, {}
        self.tokenizer, self.pool, self.scheduler, self.model = lm.tokenizer, lm.pool, lm.scheduler, lm.model
        lm.scheduler.events = []

    def encode_prompt(self, prompt):
        return self.lm.encode_prompt(prompt)

    def submit(self, prompt, params=None, sink=None):
        (r,) = self.lm._submit([prompt], params)
        self.sinks[r.request_id] = sink
        return r

    def step(self):
        fin = self.lm.scheduler.step()
        self._route()
        return fin

    def abort(self, rid):
        self.lm.scheduler.abort(rid)
        self._route()

    def has_work(self):
        return self.lm.scheduler.has_work()

    def _route(self):
        ev, self.lm.scheduler.events = self.lm.scheduler.events, []
        for e in ev:
            sink = self.sinks.get(e.request_id)
            if sink:
                sink(e)
            if isinstance(e, Finished):
                self.sinks.pop(e.request_id, None)
