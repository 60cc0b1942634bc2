"""The step's token budget (`EngineConfig.max_batch_tokens`), as vLLM and SGLang schedule it: decodes first,
then prefill chunks.

Every row that is not a prefill (a decode, a fork's forced `<Path> LABEL :`, a merge's `</Path>` +
`<Conclusion>`) computes all of its pending tokens; the prefills (prompts, merge="refresh" re-encodings), oldest first, share
what remains of the budget (and at least PROMPT_PER_DECODE tokens per decode token, so many decoding rows
cannot starve a prompt), a long prompt taking several steps (chunked prefill). A chunk never samples: only
the step that computes a prefill's last token samples from it. The chunks of a prompt see
exactly the keys the whole prompt would (runner.py masks each chunk up to itself), so tokens and log-probs do not
depend on the budget beyond float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence

from engine.branch import Branch, Status
from engine.request import Request


FORCED_MAX = 16  # a fork's forced `<Path> LABEL :` is shorter: it runs whole, as a decode does


def prefilling(request: Request, branch: Branch) -> bool:
    """Whether the branch's pending tokens are a prefill that may be split: the rest of its request's prompt, or
    more than FORCED_MAX of them in a running branch (a merge="refresh" re-encoding of the joined paths). Only
    a running branch reads its own pending tokens; a forking parent's `</Goal>` and a closing path's `</Path>`,
    which other rows read in the same forward, are pending in a waiting or closing branch and run whole."""
    if branch.status is not Status.RUNNING:
        return False
    in_prompt = branch.parent is None and branch.num_computed < len(request.prompt_ids)
    return in_prompt or len(branch.pending_ids) > FORCED_MAX


PROMPT_PER_DECODE = 4  # prompt tokens a step keeps per decode token once decodes fill the budget


def prefill_share(budget: int, decode_tokens: int) -> int:
    """Prompt tokens a step may compute: what the decodes leave of the budget, and at least PROMPT_PER_DECODE per
    decode token, so a prompt's prefill keeps pace with a crowd of decoding rows (forked paths are not bounded
    by `max_running`) and its time to first token stays a small multiple of its time alone."""
    return max(budget - decode_tokens, PROMPT_PER_DECODE * decode_tokens, 1)


def plan_step(rows: Sequence[tuple[Request, Branch]], budget: int) -> list[int]:
    """Tokens each row computes this step: all pending tokens of every non-prefill row, then prompt chunks in
    row order from the prefill share (0 for a prompt that must wait for the next step)."""
    counts = [0 if prefilling(r, b) else len(b.pending_ids) for r, b in rows]
    left = prefill_share(budget, sum(counts))
    for i, (r, b) in enumerate(rows):
        if prefilling(r, b) and left > 0:
            counts[i] = min(len(b.pending_ids), left)
            left -= counts[i]
    return counts


def admission_budget(running: Sequence[Request], budget: int) -> int:
    """Prompt tokens of the step's share not yet claimed by running requests: a waiting request starts only while
    this is positive, so every admitted prompt computes at least its first chunk in the step that admits it."""
    decode = prefill = 0
    for r in running:
        for b in r.branches():
            if prefilling(r, b):
                prefill += len(b.pending_ids)
            else:
                decode += len(b.pending_ids)
    return prefill_share(budget, decode) - prefill
