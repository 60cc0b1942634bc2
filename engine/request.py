"""A request: its prompt, its tree of branches, its budgets, counters and the final result (SPEC §6, §7)."""
from __future__ import annotations

import enum
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from engine.branch import Branch, Status
from engine.params import SamplingParams
from engine.result import BranchInfo, RequestOutput, Stats
from engine.stops import StopHit, cut_at_stop, holdback_for
from multiverse.attention.counts import degree_of_parallelism
from multiverse.attention.scanner import BranchState, PathEnd, StructureRules
from multiverse.tags import StructureVocab


class Phase(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    request_id: int
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    rules: StructureRules
    phase: Phase = Phase.WAITING
    root: Branch | None = None
    finish_reason: str | None = None
    sink: Callable[[Any], None] | None = None  # receives this request's events (engine/events.py), in order
    stop_hit: StopHit | None = None  # the stop that ended the root, for text truncation
    error: str | None = None  # why it finished with "error" (a fault of this request only)
    num_skips: int = 0  # admission passes that admitted a younger request ahead of it (bounded, no starvation)
    num_generated: int = 0
    num_forks: int = 0
    num_merges: int = 0
    max_position: int = -1
    prompt_position: int = -1  # position of the last prompt token (len - 1 unless the prompt holds blocks)
    position_cap: int = 2**62  # no position of the final ids exceeds it (max_critical_tokens, context)
    cap_reason: str = "critical_length"  # the finish reason when the cap binds ("length": the model's context)
    fallbacks: list[str] = field(default_factory=list)
    num_preemptions: int = 0
    fork_proposals: int = 0  # <Parallel> drawn (engine/fork_gate.py)
    fork_accepted: int = 0  # of those, kept (at or over fork_threshold)
    peak_kv_pages: int = 0  # most KV pages its branches held together at the end of a step
    peak_paths: int = 0  # most branches decoding at once (running or closing with KV to compute)
    refreshed_tokens: list[int] = field(default_factory=list)  # merge="refresh": path tokens re-encoded per merge
    start_time: float = field(default_factory=time.perf_counter)
    end_time: float | None = None
    output: RequestOutput | None = None

    def start(self, vocab: StructureVocab) -> Branch:
        """(Re)build the root branch; a preempted request restarts here and reproduces its output (same seed)."""
        # the prompt is laid out with self.rules; a request with parallel=False then writes </Goal> as text
        rules = self.rules if self.params.parallel else replace(self.rules, parallel=False)
        self.root = Branch(label="", state=BranchState(vocab, rules))
        self.root.generator = self.generator_for("")
        self.phase = Phase.RUNNING
        self.num_generated = self.num_forks = self.num_merges = 0
        self.max_position, self.fallbacks, self.finish_reason = -1, [], None
        self.fork_proposals = self.fork_accepted = 0
        self.refreshed_tokens = []
        return self.root

    def note_memory(self) -> None:
        """Update the peaks after a step: distinct pages held (shared prefix pages once), branches decoding."""
        branches = self.branches()
        pages = sum(max(0, len(b.pages) - b.num_shared_pages) for b in branches)
        self.peak_kv_pages = max(self.peak_kv_pages, pages)
        self.peak_paths = max(self.peak_paths, sum(b.status is Status.RUNNING for b in branches))

    def note_draw(self, branch: Branch, draw: Any) -> None:  # engine.sampling.Draw
        """Telemetry of one sampled token: its entropy on the branch, a fork proposal and its fate."""
        branch.entropies[len(branch.tokens)] = draw.entropy  # the index the drawn token (or what replaces it) takes
        if draw.fork is not None:
            self.fork_proposals += 1
            self.fork_accepted += int(draw.fork)

    def generator_for(self, label: str) -> torch.Generator:
        """Each branch draws from its own stream, keyed by (seed, label): batch composition cannot change it."""
        gen = torch.Generator()
        gen.manual_seed((self.seed * 1_000_003 + zlib.crc32(label.encode())) % (2**63))
        return gen

    def branches(self) -> list[Branch]:
        return self.root.walk() if self.root is not None else []

    @property
    def holdback(self) -> int:
        """Characters a stream of this request withholds at the end until it finishes (engine/stops.py)."""
        return holdback_for(self.params.stop)

    @property
    def critical_path(self) -> int:
        return max(0, self.max_position - self.prompt_position)

    def over_budget(self) -> str | None:
        """The cost budget; the position budgets (critical path, context) are kept by engine/positions.py."""
        return "length" if self.num_generated >= self.params.max_new_tokens else None

    # ------------------------------------------------------------------ result
    def build_output(self, codec) -> RequestOutput:  # noqa: ANN001 - engine.detok.TextCodec
        ids, lps, forced = self.root.flatten() if self.root is not None else (list(self.prompt_ids), [], [])
        n = len(self.prompt_ids)
        gen_ids, gen_lps = ids[n:], lps[n:]
        texts = []
        for decode in (codec.raw, codec.clean):
            text = decode(gen_ids)
            if self.stop_hit is not None:  # the text ends at the stop string (kept or not); later chars dropped
                tail = decode(gen_ids[-self.stop_hit.tail_tokens :])
                text = cut_at_stop(text, tail, self.stop_hit, self.params.include_stop_str_in_output)
            texts.append(text)
        wall = (self.end_time or time.perf_counter()) - self.start_time
        critical = self.critical_path
        stats = Stats(
            generated_tokens=self.num_generated,
            forced_tokens=sum(forced[n:]),
            critical_path=critical,
            degree_of_parallelism=degree_of_parallelism(self.num_generated, critical),
            wall_time_s=wall,
            tokens_per_s=self.num_generated / wall if wall > 0 else 0.0,
            num_forks=self.num_forks,
            num_merges=self.num_merges,
            fallbacks=list(self.fallbacks),
            num_preemptions=self.num_preemptions,
            # reuse absorbs the children's KV as computed; refresh recomputes the joined paths (engine/refresh.py)
            merges_exact=self.num_merges - len(self.refreshed_tokens),
            merges_recomputed=len(self.refreshed_tokens),
            merge_prefill_tokens=list(self.refreshed_tokens),
            fork_proposals=self.fork_proposals,
            fork_accepted=self.fork_accepted,
            peak_kv_pages=self.peak_kv_pages,
            peak_paths=self.peak_paths,
        )
        tree = [self._info(b, codec.raw) for b in self.branches()]
        return RequestOutput(
            request_id=self.request_id,
            prompt_token_ids=list(self.prompt_ids),
            text=texts[1],
            raw_text=texts[0],
            error=self.error,
            token_ids=gen_ids,
            logprobs=gen_lps if self.params.logprobs else None,
            finish_reason=self.finish_reason or "abort",
            tree=tree,
            stats=stats,
            seed=self.seed,
            entropies=self.root.flat_entropies()[n:] if self.root is not None else [],
        )

    def _info(self, branch: Branch, decode) -> BranchInfo:  # noqa: ANN001
        own = branch.tokens[len(self.prompt_ids) :] if branch.parent is None else branch.tokens
        reason = branch.finish_reason if branch.parent is not None else self.finish_reason
        h = list(branch.entropies.values())
        mean, peak = (sum(h) / len(h), max(h)) if h else (None, None)
        return BranchInfo(branch.label, decode(own), len(own), reason, branch.depth, mean, peak)


def open_paths(root: Branch) -> list[Branch]:
    """Paths not closed yet (running or waiting on their own forks), outermost first; those close_open_paths closes."""
    return [b for b in root.walk() if b.status in (Status.RUNNING, Status.WAITING) and b.parent is not None]


def close_open_paths(root: Branch, path_close: int, reason: str) -> None:
    """Finish a tree early: every unfinished path is closed with forced </Path> tokens (no KV needed: nothing
    follows), as many as its scanner needs to report PathEnd (sequential paths opened inside it close first).

    The final merged ids stay well formed, so the core's layout of them matches what the engine computed.
    Under structure="constrained" a block whose paths were cut also gets its forced `<Conclusion></Conclusion>
    </Parallel>` (after its paths in merged order: appended to the waiting branch's own tokens).
    """
    for branch in root.walk():
        if branch.status is Status.DEFERRED:  # a held-back path that never started: its forced prefix, then closed
            for token in branch.prefix:
                branch.state.step(token)
                if branch.guard is not None:
                    branch.guard.step(token)
                branch.tokens.append(token)
                branch.logprobs.append(None)
            branch.status = Status.RUNNING
        if branch.guard is not None and branch.status in (Status.RUNNING, Status.WAITING):
            for token in branch.guard.closers():  # structure="constrained": a cut block still ends well formed
                branch.tokens.append(token)
                branch.logprobs.append(None)
                branch.state.step(token)
        if branch.status in (Status.RUNNING, Status.WAITING) and branch.parent is not None:
            for _ in range(len(branch.tokens) + 1):  # bounded: each </Path> closes one open <Path>
                branch.tokens.append(path_close)
                branch.logprobs.append(None)
                if isinstance(branch.state.step(path_close), PathEnd):
                    break
            branch.finish_reason = reason
        branch.status = Status.DONE
