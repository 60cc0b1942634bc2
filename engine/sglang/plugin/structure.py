"""What the plugin reads off a request's token ids: its structure rules, and the block a merge request closes.

Pure functions over ids and the core's layout (no SGLang import), so they are tested without a server.
Invariant used everywhere: a token whose layout has a non-empty hidden range must not be computed by a
causal extend (it would see its earlier siblings); only the cache may supply its KV.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from engine.sglang.plugin.request_layout import RequestLayout
from multiverse.attention import StructureRules
from multiverse.tags import StructureVocab

PARAMS_KEY = "multiverse"  # custom_params[PARAMS_KEY] = {"parallel": bool, "max_paths": int|None, "max_depth": ...}


@lru_cache(maxsize=8)
def vocab_for(tokenizer_path: str) -> StructureVocab:
    """The structure vocabulary of the served model's tokenizer (loaded once per process)."""
    from transformers import AutoTokenizer

    return server_vocab(AutoTokenizer.from_pretrained(tokenizer_path))


def server_vocab(tokenizer: Any) -> StructureVocab:
    """The tokenizer's structure vocabulary, its label decoding memoized: every call that scans a `</Goal>`
    reads the outlines' labels, and the children of one fork scan the same `</Goal>` each."""
    vocab = StructureVocab.from_tokenizer(tokenizer)
    decode = lru_cache(maxsize=4096)(lambda ids: vocab.decode(list(ids)))
    return replace(vocab, decode=lambda ids: decode(tuple(ids)))


def rules_from(custom_params: Any) -> StructureRules:
    """The client's StructureRules, sent in custom_params; the defaults when absent."""
    spec = custom_params.get(PARAMS_KEY) if isinstance(custom_params, dict) else None
    if not isinstance(spec, dict):
        return StructureRules()
    return StructureRules(bool(spec.get("parallel", True)), spec.get("max_paths"), spec.get("max_depth"))


def rules_to_params(rules: StructureRules) -> dict[str, Any]:
    return {PARAMS_KEY: {"parallel": rules.parallel, "max_paths": rules.max_paths, "max_depth": rules.max_depth}}


@dataclass(frozen=True)
class MergePlan:
    """The block whose paths precede `conclusion`: child k's own sequence is ids[:first_path] + ids[s_k:e_k+1]."""

    first_path: int  # index of the block's first <Path>
    spans: tuple[tuple[int, int], ...]  # (start, end) index of each path, end = its </Path>
    conclusion: int  # index of the <Conclusion> that follows the last </Path>

    def child(self, ids: list[int], k: int) -> list[int]:
        s, e = self.spans[k]
        return ids[: self.first_path] + ids[s : e + 1]


def plan_merge(ids: Sequence[int], lay: RequestLayout, masked: int, vocab: StructureVocab) -> MergePlan | str | None:
    """The innermost block around token `masked` (a token of a non-first path), or why there is none; None when
    the block starts before what `lay` covers (the caller then plans on a fresh scan of all ids).

    Path k >= 2 of a block B carries the hidden range (first <Path> of B, <Path> of k) as its last entry;
    path 1 carries none of B's, so it starts at B's first <Path>. Paths 2..n are contiguous and every token in
    them (nested blocks included) carries B's range at the same depth d, so a walk back over the runs from
    `masked` finds them: O(tokens of paths 2..n).
    """
    hidden = lay.hidden_at(masked)
    d, first = len(hidden) - 1, hidden[-1][0]
    starts = {first}
    k = bisect_right(lay.run_starts, masked) - 1
    while k >= 0 and len(lay.runs[k][2]) > d and lay.runs[k][2][d][0] == first:
        starts.add(lay.runs[k][2][d][1])
        k -= 1
    if k < 0 and len(lay.before) > d and lay.before[d][0] == first:
        return None  # paths 2..n begin before the layout's start
    starts_sorted = sorted(starts)
    ends = [s - 1 for s in starts_sorted[1:]] + [masked]
    t = vocab.tags
    for s, e in zip(starts_sorted, ends):
        if ids[s] != t.path_open or ids[e] != t.path_close:
            return f"path at tokens {s}..{e} is not <Path>..</Path> (non-canonical block)"
    c = masked + 1
    if c >= len(ids) or ids[c] != t.conclusion_open:
        return f"the block's last </Path> (token {masked}) is not followed by <Conclusion>"
    return MergePlan(first, tuple(zip(starts_sorted, ends)), c)


def merge_plan(ids: Sequence[int], lay: RequestLayout, masked: int, vocab: StructureVocab) -> MergePlan | str:
    """plan_merge on the request's layout; on a fresh scan of all ids when the block begins before it (rare)."""
    plan = plan_merge(ids, lay, masked, vocab)
    if plan is None:
        plan = plan_merge(ids, RequestLayout.of(ids, vocab, lay.rules), masked, vocab)
    assert plan is not None  # a scan from token 0 always covers the block
    return plan
