"""What a finished request returns: text, merged token ids, logprobs, the branch tree and stats (SPEC §7)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class BranchInfo:
    label: str  # "" for the root
    text: str  # this branch's own tokens (forced ones included), decoded
    num_tokens: int
    finish_reason: str | None  # path_end | eos | stop | length | ... ; None for the root while it decodes
    depth: int
    mean_entropy: float | None = None  # nats, over the tokens this branch sampled (None: it sampled none)
    max_entropy: float | None = None


@dataclass(frozen=True)
class Stats:
    generated_tokens: int  # sampled by any branch
    forced_tokens: int  # placed by the engine (fork prefixes, <Conclusion>, closing </Path>)
    critical_path: int  # largest position reached - position of the last prompt token (positions decoded)
    degree_of_parallelism: float  # generated_tokens / critical_path
    wall_time_s: float
    tokens_per_s: float
    num_forks: int
    num_merges: int
    fallbacks: list[str] = field(default_factory=list)  # SPEC §6 reasons, one per block that ran sequentially
    num_preemptions: int = 0  # times the request was evicted for memory and restarted (same seed, same output)
    # How merges got their KV. Native: every merge absorbs the children's KV (exact). SGLang backend: exact when
    # the server reused all children's KV (cached_tokens == prompt_tokens - 1), else recomputed; reissued: the
    # plugin refused a call whose merged block's KV was evicted and the client sent it again (after re-prefilling
    # the evicted paths: paths_reprefilled).
    merges_exact: int = 0
    merges_recomputed: int = 0
    merges_reissued: int = 0
    paths_reprefilled: int = 0  # SGLang backend: evicted paths' KV computed again from their tokens before a re-issue
    merge_prefill_tokens: list[int] = field(default_factory=list)  # per merge call: prompt - cached tokens
    fork_proposals: int = 0  # <Parallel> drawn by any branch (engine/fork_gate.py)
    fork_accepted: int = 0  # of those, kept (fork_threshold met, or no threshold)
    peak_kv_pages: int = 0  # most KV pages the request held at once (native engine; measured after each step)
    peak_paths: int = 0  # most of its branches sampling in one step (the path cap bounds this)

    @property
    def fork_acceptance_rate(self) -> float | None:
        """Kept / proposed forks; None when the model never drew <Parallel>."""
        return self.fork_accepted / self.fork_proposals if self.fork_proposals else None

    def as_dict(self) -> dict[str, Any]:
        """Every field plus the derived fork acceptance rate (what JSON answers carry)."""
        return {**asdict(self), "fork_acceptance_rate": self.fork_acceptance_rate}


@dataclass(frozen=True)
class RequestOutput:
    request_id: int
    prompt_token_ids: list[int]
    text: str  # generated text without end-of-turn/special tokens (structure tags kept), cut at a stop string
    token_ids: list[int]  # generated ids in final merged order: prefix, path 1, ..., path n, conclusion, ...
    logprobs: list[float | None] | None  # aligned with token_ids when asked; None at forced tokens
    finish_reason: str  # stop | length | critical_length | out_of_memory | abort | error
    tree: list[BranchInfo]
    stats: Stats
    seed: int
    raw_text: str = ""  # every token decoded (special tokens such as <|im_end|> visible), cut like `text`
    error: str | None = None  # finish_reason "error": what this request's fault was (its neighbours went on)
    entropies: list[float | None] = field(default_factory=list)  # aligned with token_ids; None at forced tokens
