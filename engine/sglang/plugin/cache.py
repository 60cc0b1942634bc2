"""The `multiverse` radix-cache backend: SGLang's unified radix cache plus exact merges.

A merge request is prefix + path 1 + ... + path n + <Conclusion>. Each child's own sequence (prefix + path k,
its </Path> included) is in the tree once the client has closed the path. On the first match of a merge
request this cache builds the tree node for prefix + path 1 + ... + path n: path 1's node is reused as it is,
and the KV of paths 2..n is COPIED into fresh slots (never recomputed), so every slot has exactly one owner in
the tree and SGLang's own locking, eviction and insert-on-finish stay correct. The request then matches all
but its last token: one token (the forced <Conclusion>) is prefilled. A merged node is an ordinary node, so
the next fork, a later block and an outer merge reuse it.

A request whose uncached tokens would need the Multiverse mask (a child's KV was evicted before the merge,
or a prompt holding complete blocks) is never computed causally: it is aborted with a message naming the
tokens, and the client re-issues it (SPEC §5 forbids a silent recompute).

Which tokens need the mask is read off the request's layout, resumed from the scan state kept at the matched
node (states.py) and extended by the tokens after it: a call costs O(tokens it adds), not O(sequence).
"""
from __future__ import annotations

import logging
from array import array
from typing import Any

import torch
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams, MatchResult
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.registry import TreeCacheBuildContext, create_unified_radix_cache
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from engine.sglang.plugin.checks import check_server_args
from engine.sglang.plugin.request_layout import LAYOUT, RequestLayout, ids_between, request_ids
from engine.sglang.plugin.states import ScanStates
from engine.sglang.plugin.structure import MergePlan, child_ids, merge_plan, rules_from, vocab_for

log = logging.getLogger(__name__)
MERGE_FAILED = "multiverse merge failed"  # prefix of the abort message the client looks for
REFUSED = "_multiverse_refused"  # attribute on sglang's Req: aborted by this cache (its ids are a stub)


class MultiverseRadixCache(UnifiedRadixCache):
    tokenizer_path: str = ""  # set by the factory (a subclass per server)
    states: ScanStates  # set by the factory: scan states per tree node, where request layouts resume
    merges_built = 0  # counters, logged: merged nodes built and merge requests refused
    merges_refused = 0

    def match_prefix(self, params: MatchPrefixParams) -> MatchResult:
        result = super().match_prefix(params)
        req = params.req
        if req is None or self.disable:
            return result
        full = request_ids(req)
        vocab = vocab_for(self.tokenizer_path)
        hits: dict[int, MatchResult] = {}  # a merge's children, matched once: index of the path's <Path> -> hit
        lay = self._layout(req, full, result, hits)
        plan: MergePlan | str | None = lay.plan
        if plan is None:
            masked = lay.first_masked(result.device_prefix_len)
            if masked is None:
                return result
            plan = merge_plan(full, lay, masked, vocab)
        try:
            problem = plan if isinstance(plan, str) else self._build_merged(req, full, plan, hits)
        except Exception as err:  # noqa: BLE001 - a failed merge fails its request, never the server
            log.exception("multiverse merge of rid %s", req.rid)
            problem = f"building the merged node raised {err!r}"
        if problem is None:
            result = super().match_prefix(params)
            done = result.device_prefix_len >= lay.start
            masked = lay.first_masked(result.device_prefix_len) if done else lay.start - 1
            if masked is None:
                self.states.keep(result.last_device_node, result.device_prefix_len, lay)  # the merged node
                return result
            problem = f"token {masked} is still uncached after the merge node was built"
        return self._refuse(req, problem)

    # ------------------------------------------------------------------ layouts in O(new tokens)
    def _layout(self, req: Any, ids: list[int], result: MatchResult, hits: dict) -> RequestLayout:
        """The request's layout from its matched prefix on (reused while it covers the request's ids); a merge
        request's from its children's states (their matches kept in `hits` for the merged node's build)."""
        rules, vocab = rules_from(req.sampling_params.custom_params), vocab_for(self.tokenizer_path)

        def child_state(ids: list[int], first: int, span: tuple[int, int]) -> Any:
            child = child_ids(ids, first, span)
            hit = hits[span[0]] = super(MultiverseRadixCache, self).match_prefix(MatchPrefixParams(key=self._key(req, child)))
            return self.states.child_state(hit.last_device_node, hit.device_prefix_len, rules, len(child))

        lay = self.states.layout(ids, result.last_device_node, result.device_prefix_len, self._path_of, vocab, rules,
                                 current=getattr(req, LAYOUT, None), children=child_state)
        setattr(req, LAYOUT, lay)
        return lay

    def _path_of(self, node: Any) -> list[tuple[Any, int]]:
        """(node, end offset) from below the root down to `node`, as the tree reports them."""
        (path,) = self.tree_core.collect_path_info([node])
        return [(p.node_id, p.path_end) for p in path]

    def checkpoint_into_tree(self, req: Any, *, up_to: int, **kwargs: Any) -> None:
        """SGLang's insert of a request's KV; then the scan state at the node where it ends."""
        super().checkpoint_into_tree(req, up_to=up_to, **kwargs)
        lay = getattr(req, LAYOUT, None)
        if lay is None or self.disable or getattr(req, REFUSED, False) or getattr(req, "last_node", None) is None:
            return
        try:
            self.states.keep_inserted(lay, req.last_node, req.kv.cache_protected_len, lambda a, b: ids_between(req, a, b))
        except Exception:  # noqa: BLE001 - states only save time: losing one never fails the server
            log.exception("multiverse scan state of rid %s", req.rid)

    # ------------------------------------------------------------------ building a merged node
    def _build_merged(self, req: Any, ids: list[int], plan: MergePlan, hits: dict) -> str | None:
        """Insert prefix + path 1..n with paths 2..n's KV copied; None on success, else why not. `hits`: the
        children already matched by this call (keyed by the index of their <Path> in ids)."""
        nodes, values = [], []
        for k in range(len(plan.spans)):
            child = plan.child(ids, k)
            hit = hits.get(plan.spans[k][0]) or super().match_prefix(MatchPrefixParams(key=self._key(req, child)))
            if hit.device_prefix_len < len(child):
                return (
                    f"path {k + 1} (tokens {plan.spans[k][0]}..{plan.spans[k][1]}) has {hit.device_prefix_len} of "
                    f"{len(child)} tokens cached: its KV was evicted before the merge"
                )
            nodes.append(hit.last_device_node)
            values.append(self.path_device_indices(hit.last_device_node)[: len(child)])
        locks = [self.lock(n) for n in nodes]  # the children survive the eviction below
        try:
            sources = torch.cat([v[plan.first_path :] for v in values[1:]]) if len(values) > 1 else None
            copies = self._alloc(sources.numel()) if sources is not None else None
            if sources is not None and copies is None:
                return f"no free KV slots to copy {sources.numel()} path tokens"
            if sources is not None:
                copy_kv(self.token_to_kv_pool_allocator.get_kvcache(), copies, sources)
            value = values[0] if copies is None else torch.cat([values[0], copies])
            key = self._key(req, ids[: plan.conclusion])
            assert value.numel() == plan.conclusion, (value.numel(), plan.conclusion)
            # [0, len(child 1)) are the tree's own slots: never freed as duplicates.
            self.insert(InsertParams(key=key, value=value.to(torch.int64), prev_prefix_len=len(plan.child(ids, 0))))
        finally:
            for lock in locks:
                self.unlock(lock)
        MultiverseRadixCache.merges_built += 1
        return None

    def _alloc(self, n: int) -> torch.Tensor | None:
        allocator = self.token_to_kv_pool_allocator
        slots = allocator.alloc(n)
        if slots is None:
            self.evict(EvictParams(num_tokens=n))
            slots = allocator.alloc(n)
        return slots

    def _key(self, req: Any, ids: list[int]) -> RadixKey:
        return RadixKey(array("q", ids), req.extra_key, cache_salt=req.cache_salt)

    def _refuse(self, req: Any, problem: str) -> MatchResult:
        """Abort the request visibly; match nothing, so nothing of it is computed."""
        MultiverseRadixCache.merges_refused += 1
        setattr(req, REFUSED, True)
        message = f"{MERGE_FAILED}: {problem}; re-issue the paths and the merge"
        log.warning("%s (rid %s)", message, req.rid)
        req.set_finish_with_abort(message)
        req.refresh_fill_ids()  # the request is now a 1-token stub: nothing of its tokens is computed
        return super().match_prefix(MatchPrefixParams(key=self._key(req, [])))


def copy_kv(kv: Any, target: torch.Tensor, source: torch.Tensor) -> None:
    """KV of slots `source` into slots `target`, every layer (token-major [slots, heads, dim] buffers)."""
    if getattr(kv, "use_hnd", False) or not hasattr(kv, "k_buffer"):
        raise NotImplementedError(f"copying KV in a {type(kv).__name__} pool (only token-major MHA pools)")
    t, s = target.long(), source.long()
    for k, v in zip(kv.k_buffer, kv.v_buffer):
        k[t] = k[s]
        v[t] = v[s]


def make_factory() -> Any:
    def factory(ctx: TreeCacheBuildContext) -> Any:
        from engine.sglang.plugin import resolved

        args = resolved(ctx.server_args)
        check_server_args(args, selected=True)
        if ctx.is_hybrid_swa or ctx.is_hybrid_ssm or ctx.enable_hierarchical_cache or ctx.disable_radix_cache:
            raise ValueError("--radix-cache-backend multiverse supports full-attention models with the radix cache on")
        attrs = {"tokenizer_path": args.tokenizer_path or args.model_path, "states": ScanStates()}
        cls = type("MultiverseRadixCache", (MultiverseRadixCache,), attrs)
        return create_unified_radix_cache(ctx, cache_class=cls)

    return factory
