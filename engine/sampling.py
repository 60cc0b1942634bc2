"""Token choice per branch: processors, fork controls, greedy / temperature / top-k / top-p, raw logprobs, entropy.

Randomness comes only from the branch's own torch.Generator (seeded from the request seed and the branch
label), one uniform draw per sampled token, so a request's output does not depend on what else is batched.
Logprobs are read from the log-softmax of the model's unmodified logits.

Fault isolation: a row whose logits processor raises (or returns something that is not a [vocab] tensor)
gets its exception instead of a token; the other rows are sampled exactly as without it. The uniforms are
drawn before any batched work, so a batched draw that fails can be redone row by row with the same numbers.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from engine import fork_gate, structure_mask
from engine.branch import Branch
from engine.params import SamplingParams


class Draw(NamedTuple):
    token: int
    logprob: float  # under the model's unmodified distribution
    entropy: float  # nats, of the model's unmodified distribution at this position
    fork: bool | None  # None: no <Parallel> drawn; True: drawn and kept; False: drawn, vetoed by fork_threshold


Choice = Draw | Exception  # what went wrong for this row, or its token


def sample(
    logits: torch.Tensor, branches: Sequence[Branch], params: Sequence[SamplingParams], parallel_id: int | None = None
) -> list[Choice]:
    """logits [S, V] float32, one row per sampling branch -> one Choice per row.

    `parallel_id`: the `<Parallel>` tag, for the fork controls (engine/fork_gate.py)."""
    raw_logp = torch.log_softmax(logits, dim=-1)
    entropy = torch.special.entr(raw_logp.exp()).sum(dim=-1).tolist()  # [S]
    work = logits
    faults: dict[int, Exception] = {}
    if any(p.logits_processors for p in params):
        work = logits.clone()
        for r, (branch, p) in enumerate(zip(branches, params)):
            try:
                for processor in p.logits_processors:
                    work[r] = _checked(processor(branch.visible, work[r]), logits.shape[1])
            except Exception as err:  # noqa: BLE001 - the fault belongs to this row's request only
                faults[r] = err
    guards = [getattr(b, "guard", None) for b in branches]
    if any(g is not None for g in guards):  # structure="constrained" (engine/structure_mask.py)
        work = structure_mask.apply(work.clone() if work is logits else work, guards)
    work = fork_gate.add_bias(work, logits, params, parallel_id)
    drawn = [r for r, p in enumerate(params) if not p.greedy and r not in faults]
    u = torch.tensor([float(torch.rand((), generator=branches[r].generator)) for r in drawn], dtype=torch.float32)
    tokens = _choose(work, params, drawn, u, faults)
    forks = fork_gate.judge(work, tokens.tolist(), params, parallel_id)
    vetoed = [r for r, kept in forks.items() if not kept and r not in faults]
    if vetoed:  # <Parallel> masked in these rows; each draws again with its own uniform
        work = work.clone() if work is logits else work
        work[vetoed, parallel_id] = float("-inf")
        again = _choose(work[vetoed], [params[r] for r in vetoed], [i for i, r in enumerate(vetoed) if r in drawn],
                        u[[drawn.index(r) for r in vetoed if r in drawn]], {})
        tokens[vetoed] = again
    chosen = raw_logp.gather(1, tokens[:, None])[:, 0].tolist()
    return [faults.get(r, Draw(t, lp, entropy[r], forks.get(r))) for r, (t, lp) in enumerate(zip(tokens.tolist(), chosen))]


def _choose(
    work: torch.Tensor, params: Sequence[SamplingParams], drawn: list[int], u: torch.Tensor, faults: dict[int, Exception]
) -> torch.Tensor:
    """Tokens [S]: argmax in greedy rows, a draw with the row's uniform (u aligned with `drawn`) in the others."""
    tokens = work.argmax(dim=-1)
    if drawn:
        rows, ps = [work[r] for r in drawn], [params[r] for r in drawn]
        try:
            tokens[drawn] = _draw(rows, ps, u)
        except Exception:  # noqa: BLE001 - find the row at fault: redo each alone with its own uniform
            for i, r in enumerate(drawn):
                try:
                    tokens[r] = _draw([rows[i]], [ps[i]], u[i : i + 1])[0]
                except Exception as err:  # noqa: BLE001
                    faults[r] = err
    return tokens


def _checked(out: object, vocab: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != (vocab,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"a logits processor must return a tensor of shape ({vocab},), got {shape}")
    return out


def _draw(rows: list[torch.Tensor], params: list[SamplingParams], u: torch.Tensor) -> torch.Tensor:
    """Tokens from softmax(row / T) cut to the top-k and then the top-p nucleus, by inverse CDF with the row's
    uniform u[i] in [0, 1). Batched over rows; each row's result depends only on its own row."""
    x = torch.stack(rows)  # [R, V]
    n, vocab = x.shape
    dev = x.device
    x = x / torch.tensor([p.temperature for p in params], dtype=x.dtype, device=dev)[:, None]
    sorted_x, order = torch.sort(x, dim=-1, descending=True, stable=True)
    rank = torch.arange(vocab, device=dev)[None, :]
    top_k = torch.tensor([min(p.top_k, vocab) if p.top_k > 0 else vocab for p in params], device=dev)[:, None]
    probs = torch.softmax(sorted_x.masked_fill(rank >= top_k, float("-inf")), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
    top_p = torch.tensor([p.top_p for p in params], dtype=probs.dtype, device=dev)[:, None]
    probs = probs.masked_fill(before >= top_p, 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    u = u.to(device=dev, dtype=cdf.dtype)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=vocab - 1)
    tokens = order.gather(1, pick)[:, 0]
    broken = ~torch.isfinite(cdf[:, -1]) | (cdf[:, -1] <= 0)  # e.g. every logit -inf: fall back to argmax
    return torch.where(broken, x.argmax(dim=-1), tokens)
