"""Scripted decoding: a logits processor that lets each branch write only its next token of a target sequence.

The target is a final merged sequence (prompt + generation). For every generated index j, the branch that
writes token j sees exactly the keys that the core's Multiverse mask lets j see, so the visible ids of that
branch at that moment identify j: `script[tuple(visible before j)] = target[j]`. Used by the SPEC §5 invariant
test and by the benchmark; a branch whose visible ids are not in the script gets `fallback` (EOS by default).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from multiverse.attention import dense_mask
from multiverse.attention.scanner import StructureRules


class ScriptedProcessor:
    def __init__(
        self,
        target: Sequence[int],
        prompt_len: int,
        tokenizer: Any,
        rules: StructureRules | None = None,
        fallback: int | None = None,
    ) -> None:
        ids = list(target)
        visible = dense_mask(ids, tokenizer, rules=rules or StructureRules())  # [L, L] True = may attend
        self.next: dict[tuple[int, ...], int] = {}
        for j in range(prompt_len, len(ids)):
            seen = visible[j, :j].nonzero().flatten().tolist()
            self.next[tuple(ids[i] for i in seen)] = ids[j]
        self.fallback = tokenizer.eos_token_id if fallback is None else fallback
        self.misses = 0

    def __call__(self, visible_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        token = self.next.get(tuple(visible_ids))
        if token is None:
            self.misses += 1
            token = self.fallback
        out = torch.full_like(logits, float("-inf"))
        out[token] = 0.0
        return out
