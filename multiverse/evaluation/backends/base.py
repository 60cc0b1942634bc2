"""What every backend takes (prompts, one Decoding each) and gives back (one Generation each, as it finishes).

A Generation carries the raw text (special tokens kept: the structure tags are needed to read the tree), the
SPEC §7 counts from the core's one definition, and the finish reason in the engine's terms
(stop | length | critical_length | out_of_memory | abort | error).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Prompt = str | list[dict[str, str]]
TRUNCATED = ("length", "critical_length", "out_of_memory", "abort", "error")


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int
    max_critical_tokens: int | None
    temperature: float
    top_p: float
    seed: int
    controls: dict[str, Any] = field(default_factory=dict)  # engine/controls.py (SamplingParams fields)


@dataclass(frozen=True)
class Generation:
    raw_text: str
    finish_reason: str
    generated_tokens: int
    forced_tokens: int
    critical_path: int
    degree_of_parallelism: float
    num_forks: int
    fallbacks: tuple[str, ...]
    wall_s: float  # this request's own latency (submission to finish)
    tree: list[dict[str, Any]] = field(default_factory=list)  # branches: label, depth, tokens, finish reason
    token_ids: list[int] | None = None  # generated ids when the backend has them
    fork_proposals: int = 0  # <Parallel> drawn (engine/fork_gate.py); 0 when the backend does not say
    fork_accepted: int = 0
    entropies: list[float] | None = None  # per sampled token in final merged order (native backend), nats

    @classmethod
    def from_text(cls, raw_text: str, finish_reason: str, tokenizer: Any, wall_s: float, tree: list | None = None) -> "Generation":
        """A generation known only by its text: the counts come from the core (multiverse.attention.count_tokens)."""
        from multiverse.evaluation.analysis import counts_from_text

        c = counts_from_text(raw_text, tokenizer)
        return cls(raw_text, finish_reason, c.generated, c.forced, c.critical_path, c.degree_of_parallelism,
                   c.num_forks, c.fallbacks, wall_s, tree or [])

    @property
    def truncated(self) -> bool:
        return self.finish_reason in TRUNCATED


class Backend(Protocol):
    name: str
    tokenizer: Any  # used for prompts' chat template, special tokens and counts
    context: Any  # multiverse.evaluation.context.Context: the positions a prompt and its generation may use

    def generate(
        self, prompts: Sequence[Prompt], decodings: Sequence[Decoding], in_flight: int | None = None
    ) -> Iterator[tuple[int, Generation]]:
        """(index into prompts, Generation) as each one finishes, in any order; up to `in_flight` requests run at
        once (a server backend: its own concurrency) and the next starts as soon as one finishes."""
        ...

    def generate_all(self, prompts: Sequence[Prompt], decodings: Sequence[Decoding]) -> list[Generation]:
        """All of them, in prompt order (what speed measurements time)."""
        ...

    def sequential(self) -> "Backend":
        """The same model decoding without forks (SPEC §7's speedup baseline)."""
        ...

    def describe(self) -> dict[str, Any]:
        ...
