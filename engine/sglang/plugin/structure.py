"""What the plugin reads off a request's token ids: its structure rules, and the block a merge request closes.

Pure functions over ids and the core's layout (no SGLang import), so they are tested without a server.
Invariant used everywhere: a token whose layout has a non-empty hidden range must not be computed by a
causal extend (it would see its earlier siblings); only the cache may supply its KV.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from multiverse.attention import Layout, StructureRules, layout
from multiverse.tags import StructureVocab

PARAMS_KEY = "multiverse"  # custom_params[PARAMS_KEY] = {"parallel": bool, "max_paths": int|None, "max_depth": ...}


@lru_cache(maxsize=8)
def vocab_for(tokenizer_path: str) -> StructureVocab:
    """The structure vocabulary of the served model's tokenizer (loaded once per process)."""
    from transformers import AutoTokenizer

    return StructureVocab.from_tokenizer(AutoTokenizer.from_pretrained(tokenizer_path))


def rules_from(custom_params: Any) -> StructureRules:
    """The client's StructureRules, sent in custom_params; the defaults when absent."""
    spec = custom_params.get(PARAMS_KEY) if isinstance(custom_params, dict) else None
    if not isinstance(spec, dict):
        return StructureRules()
    return StructureRules(bool(spec.get("parallel", True)), spec.get("max_paths"), spec.get("max_depth"))


def rules_to_params(rules: StructureRules) -> dict[str, Any]:
    return {PARAMS_KEY: {"parallel": rules.parallel, "max_paths": rules.max_paths, "max_depth": rules.max_depth}}


def first_masked(lay: Layout, start: int) -> int | None:
    """Index of the last token at or after `start` that has a hidden range (needs the Multiverse mask), else None."""
    hidden = (lay.hidden_hi[start:] > lay.hidden_lo[start:]).any(dim=1).nonzero()
    return start + int(hidden[-1]) if hidden.numel() else None


@dataclass(frozen=True)
class MergePlan:
    """The block whose paths precede `conclusion`: child k's own sequence is ids[:first_path] + ids[s_k:e_k+1]."""

    first_path: int  # index of the block's first <Path>
    spans: tuple[tuple[int, int], ...]  # (start, end) index of each path, end = its </Path>
    conclusion: int  # index of the <Conclusion> that follows the last </Path>

    def child(self, ids: list[int], k: int) -> list[int]:
        s, e = self.spans[k]
        return ids[: self.first_path] + ids[s : e + 1]


def plan_merge(ids: list[int], lay: Layout, masked: int, vocab: StructureVocab) -> MergePlan | str:
    """The innermost block around token `masked` (a token of a non-first path), or why there is none.

    Path k >= 2 of a block B carries the hidden range (first <Path> of B, <Path> of k) as its last entry;
    path 1 carries none of B's, so it starts at B's first <Path>.
    """
    lo, hi = lay.hidden_lo[masked].tolist(), lay.hidden_hi[masked].tolist()
    d = max(i for i in range(len(lo)) if hi[i] > lo[i])
    first = lo[d]
    same = (lay.hidden_lo[:, d] == first) & (lay.hidden_hi[:, d] > first)
    starts = sorted({first} | set(lay.hidden_hi[same, d].tolist()))
    last_end = int(same.nonzero()[-1])
    ends = [s - 1 for s in starts[1:]] + [last_end]
    t = vocab.tags
    for s, e in zip(starts, ends):
        if ids[s] != t.path_open or ids[e] != t.path_close:
            return f"path at tokens {s}..{e} is not <Path>..</Path> (non-canonical block)"
    c = last_end + 1
    if c >= len(ids) or ids[c] != t.conclusion_open:
        return f"the block's last </Path> (token {last_end}) is not followed by <Conclusion>"
    return MergePlan(first, tuple(zip(starts, ends)), c)


def sequence_layout(ids: list[int], vocab: StructureVocab, rules: StructureRules) -> Layout:
    return layout(ids, vocab, rules=rules)
