"""What the plugin reads off a request's token ids: its structure rules, and the block a merge request closes.

Pure functions over ids and the core's layout (no SGLang import), so they are tested without a server.
Invariant used everywhere: a token whose layout has a non-empty hidden range must not be computed by a
causal extend (it would see its earlier siblings); only the cache may supply its KV.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from engine.sglang.plugin.request_layout import RequestLayout
from multiverse.attention import LayoutScan, StructureRules
from multiverse.attention.resume import merge_children
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

    def child(self, ids: Sequence[int], k: int) -> list[int]:
        return child_ids(ids, self.first_path, self.spans[k])


def child_ids(ids: Sequence[int], first: int, span: tuple[int, int]) -> list[int]:
    """A merge child's own sequence: the prefix before its block's first <Path>, then its path."""
    out = ids[:first] if isinstance(ids, list) else list(ids[:first])  # a list's slice is already a copy
    out += ids[span[0] : span[1] + 1]
    return out


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


def path_spans(ids: Sequence[int], a: int, b: int, vocab: StructureVocab) -> list[tuple[int, int]] | None:
    """(start, end) of the `<Path>..</Path>` runs that tile ids[a:b] at the top level (nested ones inside), or
    None when they do not tile it. Only the path tags are visited: list.index finds them, so the Python work is
    O(tags), the rest a C scan."""
    t = vocab.tags
    events = sorted([(i, 1) for i in _indices(ids, t.path_open, a, b)] + [(i, -1) for i in _indices(ids, t.path_close, a, b)])
    spans, depth, start, at = [], 0, a, a
    for i, step in events:
        if step == 1 and depth == 0:
            if i != at:
                return None  # text between two paths
            start = i
        depth += step
        if depth < 0:
            return None
        if step == -1 and depth == 0:
            spans.append((start, i))
            at = i + 1
    return spans if spans and depth == 0 and at == b else None


def _indices(ids: Sequence[int], token: int, a: int, b: int) -> list[int]:
    out = []
    find = ids.index
    try:
        while True:
            a = find(token, a, b)
            out.append(a)
            a += 1
    except ValueError:
        return out


# (the merge's ids, its block's first <Path>, (start, end) of path k) -> the state where child k's own sequence,
# ids[:first] + ids[start:end + 1], ends in the tree. The lookup builds that key itself: an O(sequence) copy that
# the tree's match needs anyway (SGLang keys every match by the whole sequence), not the plugin's layout work.
StateOf = Callable[[Sequence[int], int, tuple[int, int]], "LayoutScan | None"]


def merged_layout(ids: Sequence[int], anchor: LayoutScan, state_of: StateOf, vocab: StructureVocab) -> RequestLayout | None:
    """The layout of a merge request (prefix + path 1..n + <Conclusion>) whose cached prefix ends right after
    path 1 (`anchor`: the scan there), built from the children's stored scans rather than by scanning paths
    2..n: O(depth + tags of paths 2..n) plus the children's lookups. Its `plan` is the block's MergePlan; it
    starts at the <Conclusion> (nothing before it is left to compute once the merged node exists). None when
    the request is not such a merge or a child's state is not kept (the caller scans instead)."""
    head = anchor.open_block()
    c, depth = len(ids) - 1, anchor.length
    if head is None or head[2] != 1 or head[1] < 2 or ids[-1] != vocab.tags.conclusion_open:
        return None
    spans = path_spans(ids, depth, c, vocab)
    if spans is None or len(spans) != head[1] - 1:
        return None
    first = head[0]
    others = []
    for s, e in spans:
        state = state_of(ids, first, (s, e))
        if state is None:
            return None
        others.append(state)
    merged = merge_children(anchor, others, [s for s, _ in spans], c)
    if merged is None:
        return None
    lay = RequestLayout(merged)
    lay.save()  # the merged node ends here
    lay.extend(ids[c:])
    lay.plan = MergePlan(first, ((first, depth - 1), *spans), c)
    return lay
