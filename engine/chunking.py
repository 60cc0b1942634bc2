"""The step's token budget (`EngineConfig.max_batch_tokens`), as vLLM and SGLang schedule it: decodes first,
then prefill chunks.

Every row that is not prefilling its prompt (a decode, a fork's forced `<Path> LABEL :`, a merge's
`</Path>` + `<Conclusion>`) computes all of its pending tokens; the prompts being prefilled, oldest first, share
what remains of the budget, a long prompt taking several steps (chunked prefill). A chunk never samples: only
the step that computes a prompt's last token samples its first generated token. The chunks of a prompt see
exactly the keys the whole prompt would (runner.py masks each chunk up to itself), so tokens and log-probs do not
depend on the budget beyond float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence

from engine.branch import Branch
from engine.request import Request


def prefilling(request: Request, branch: Branch) -> bool:
    """Whether the branch's pending tokens are (the rest of) its request's prompt."""
    return branch.parent is None and branch.num_computed < len(request.prompt_ids)


def plan_step(rows: Sequence[tuple[Request, Branch]], budget: int) -> list[int]:
    """Tokens each row computes this step: all pending tokens of every non-prefill row, then prompt chunks in
    row order from what is left of `budget` (0 for a prompt that must wait for the next step)."""
    counts = [0 if prefilling(r, b) else len(b.pending_ids) for r, b in rows]
    left = budget - sum(counts)
    for i, (r, b) in enumerate(rows):
        if prefilling(r, b) and left > 0:
            counts[i] = min(len(b.pending_ids), left)
            left -= counts[i]
    return counts


def admission_budget(running: Sequence[Request], budget: int) -> int:
    """Tokens of the step's budget not yet claimed by running requests: a waiting request starts only while this
    is positive, so every admitted prompt computes at least its first chunk in the step that admits it."""
    return budget - sum(len(b.pending_ids) for r in running for b in r.branches())
