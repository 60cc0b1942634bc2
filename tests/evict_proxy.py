"""A real HTTP proxy on 127.0.0.1 that makes `multiverse serve` answer like SGLang with the multiverse plugin
under KV pressure: it keeps the prefix tree the server's cache would hold, evicts all of it at chosen moments,
and refuses a call the way the plugin does when a merged block's KV is gone.

Per input (the plugin's rule, engine/sglang/plugin/cache.py, with its own pure functions): the cached prefix of
the ids but the last; if a token after it needs the mask, the merge plan of the last such token; every child
of that block cached: the merged sequence is inserted and the call forwarded; else it is refused with
`multiverse merge failed: path k ... evicted`. Answers as SGLang does: a batch with a refused input gets a 400
naming it (the client then sends each input alone), a lone refused input a 400 with the message. After a
forwarded call, each input's ids and output (but the last token, which has no KV) are inserted.
Eviction: the whole tree is dropped before the first sighting of every `every`-th distinct merge call (ids
ending with `<Conclusion>`), so that merge, the calls continuing other requests and the children rebuilt
for them meet evicted blocks.
"""
from __future__ import annotations

import json

import httpx
from starlette.requests import Request
from starlette.responses import Response

from engine.sglang.plugin.request_layout import RequestLayout
from engine.sglang.plugin.structure import MergePlan, merge_plan
from fault_proxy import FaultProxy
from multiverse.attention import StructureRules
from multiverse.tags import StructureVocab


class PrefixCache:
    """The token prefixes a radix cache holds: a trie of dicts (token -> subtree)."""

    def __init__(self) -> None:
        self.root: dict = {}

    def insert(self, ids: list[int]) -> None:
        node = self.root
        for t in ids:
            node = node.setdefault(t, {})

    def cached(self, ids: list[int]) -> int:
        node, n = self.root, 0
        for t in ids:
            if t not in node:
                break
            node, n = node[t], n + 1
        return n


class EvictingProxy(FaultProxy):
    def __init__(self, target: str, vocab: StructureVocab, every: int = 1) -> None:
        super().__init__(target)
        self.vocab, self.every = vocab, every
        self.cache = PrefixCache()
        self.merge_calls: set[tuple[int, ...]] = set()  # distinct merge calls seen
        self.evictions = 0
        self.refused: set[tuple[int, ...]] = set()  # distinct inputs refused
        self.forwarded: set[tuple[int, ...]] = set()  # distinct inputs served

    async def forward(self, request: Request) -> Response:
        if request.url.path != "/generate":
            return await super().forward(request)
        body = json.loads(await request.body())
        inputs = body["input_ids"]
        problems = [p for p in map(self._plugin_match, inputs) if p]
        if problems:
            return Response(json.dumps({"error": {"message": problems[0]}}), status_code=400)
        async with httpx.AsyncClient(base_url=self.target, timeout=120) as http:
            answer = await http.post("/generate", json=body)
        if answer.status_code == 200:
            for ids, item in zip(inputs, answer.json()):
                self.forwarded.add(tuple(ids))
                self.cache.insert((ids + item["output_ids"])[:-1] if item["output_ids"] else ids)
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))

    def _plugin_match(self, ids: list[int]) -> str | None:
        """None when the plugin would serve ids (building a merged block from cached children), else its refusal."""
        t = self.vocab.tags
        if ids[-1] == t.conclusion_open and tuple(ids) not in self.merge_calls:
            self.merge_calls.add(tuple(ids))
            if len(self.merge_calls) % self.every == 0:
                self.cache, self.evictions = PrefixCache(), self.evictions + 1
        lay = RequestLayout.of(ids, self.vocab, StructureRules())
        masked = lay.first_masked(self.cache.cached(ids[:-1]))
        if masked is None:
            return None
        plan = merge_plan(ids, lay, masked, self.vocab)
        assert isinstance(plan, MergePlan), plan
        for k in range(len(plan.spans)):
            child = plan.child(ids, k)
            if self.cache.cached(child) < len(child):
                self.refused.add(tuple(ids))
                return f"multiverse merge failed: path {k + 1} of the block at token {plan.first_path} was evicted"
        self.cache.insert(ids[: plan.conclusion])
        return None

    def refused_after_served(self) -> set[tuple[int, ...]]:
        """Inputs refused that the server had served before: evicted paths whose re-prefill was refused in turn
        (its own prefix or path held an evicted block), i.e. a rebuild one level deeper."""
        return self.refused & self.forwarded


__all__ = ["EvictingProxy", "PrefixCache"]
