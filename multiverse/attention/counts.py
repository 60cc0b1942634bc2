"""SPEC §7 derived quantities, defined once: the engine, `multiverse check` and the evaluation all call these.

- generated tokens: tokens a branch sampled; tokens the engine forces (each forked path's `<Path> LABEL ":"`,
  each merge's `<Conclusion>`) are counted separately and are NOT generated tokens;
- critical path: the largest position reached minus the position of the last prompt token;
- degree of parallelism: generated tokens / critical path, and never below 1.0 (1.0 when nothing was decoded). The
  critical path holds forced positions that `generated` leaves out, so a block cut right after its fork (each path
  only its forced `<Path> LABEL:`) would read below 1; no decoding is less parallel than sequential text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multiverse.attention.layout import Ids, as_list, layout
from multiverse.attention.scanner import StructureRules


def degree_of_parallelism(generated_tokens: int, critical_path: int) -> float:
    return max(1.0, generated_tokens / critical_path) if critical_path > 0 else 1.0


@dataclass(frozen=True)
class TokenCounts:
    generated: int  # sampled tokens (forced ones excluded)
    forced: int  # tokens the engine would place at forks and merges
    critical_path: int  # positions decoded along the longest chain
    num_forks: int
    fallbacks: tuple[str, ...]  # SPEC §6 reasons of the blocks that run sequentially

    @property
    def degree_of_parallelism(self) -> float:
        return degree_of_parallelism(self.generated, self.critical_path)


def count_tokens(ids: Ids, tokenizer: Any, prompt_len: int = 0, rules: StructureRules | None = None) -> TokenCounts:
    """Counts of the generation `ids[prompt_len:]` of a final merged sequence, as the engine would report them.

    Invariant: for a sequence the engine produced, equal to its Stats (generated, forced, critical path, forks),
    except for what text cannot show (an EOS the engine replaced by a forced `</Path>`, paths it closed at a budget).
    """
    seq = as_list(ids)
    if not 0 <= prompt_len <= len(seq):
        raise ValueError(f"prompt_len {prompt_len} outside a sequence of {len(seq)} tokens")
    lay = layout(seq, tokenizer, rules=rules)
    forced = sum(1 for i in lay.forced if i >= prompt_len)
    positions = lay.positions
    base = int(positions[prompt_len - 1]) if prompt_len else -1
    critical = max(0, int(positions[prompt_len:].max()) - base) if len(seq) > prompt_len else 0
    fallbacks = tuple(reason for i, reason in lay.fallbacks if i >= prompt_len)
    return TokenCounts(len(seq) - prompt_len - forced, forced, critical, lay.num_forks, fallbacks)
