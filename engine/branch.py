"""A branch: the root sequence of a request, or one path of a forked block.

A branch owns its block table at slot granularity: `slots[i]` is the KV slot of `visible[i]`, the i-th token
its attention reads (prompt, parent's prefix, its own tokens; after a merge, prefix + child 1 + ... + child n).
It holds one pool reference on every page in `pages`; `tail_free` slots remain in the last of them for its
own writes. Pending tokens have slots and positions but no KV yet: the next forward computes them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from engine.kv_pool import KVPool
from engine.structure_mask import StructureGuard
from multiverse.attention.scanner import BranchState


class Status(enum.Enum):
    RUNNING = "running"  # samples after its pending tokens are computed
    WAITING = "waiting"  # forked: waits for its children to merge
    CLOSING = "closing"  # ended (</Path> pending or computed); never samples again
    DEFERRED = "deferred"  # a path held back by the path cap (engine/path_cap.py): no own tokens or pages yet
    DONE = "done"


@dataclass
class Branch:
    label: str  # "" for the root, else the path label ("1", "2.1", ...)
    state: BranchState
    parent: "Branch | None" = None
    depth: int = 0
    slots: list[int] = field(default_factory=list)
    visible: list[int] = field(default_factory=list)  # token ids aligned with slots
    pages: list[int] = field(default_factory=list)
    tail_free: int = 0
    contiguous: bool = True  # slots form one increasing run (the seam then reads a slice, no gather)
    num_shared: int = 0  # leading slots/visible inherited from the parent at fork
    num_shared_pages: int = 0
    tokens: list[int] = field(default_factory=list)  # this branch's own tokens, forced and sampled, in order
    logprobs: list[float | None] = field(default_factory=list)  # None at forced tokens
    entropies: dict[int, float] = field(default_factory=dict)  # index in `tokens` -> entropy there (sampled only)
    forks: list[tuple[int, list["Branch"]]] = field(default_factory=list)  # (len(tokens) at fork, children)
    pending_ids: list[int] = field(default_factory=list)
    pending_pos: list[int] = field(default_factory=list)
    prefill_mask: torch.Tensor | None = None  # [L, L] for a prompt holding forked blocks (core layout), else causal
    status: Status = Status.RUNNING
    finish_reason: str | None = None
    end_position: int = -1  # position of its </Path> (children)
    owed: int = 0  # closing </Path>s its enclosing paths add after its subtree if the request ends (positions.py)
    generator: torch.Generator | None = None
    key: str = ""  # names its random stream: the fork index and label along its ancestry ("" for the root)
    prefix: list[int] = field(default_factory=list)  # DEFERRED: the forced <Path> LABEL ":" it starts with
    queue: list["Branch"] = field(default_factory=list)  # WAITING parent: held-back children, next first
    guard: "StructureGuard | None" = None  # structure="constrained": follows every token placed (push)
    _table: torch.Tensor | None = field(default=None, repr=False)  # LongTensor mirror of slots[:_table_len]
    _table_len: int = 0

    def table(self) -> torch.Tensor:
        """`slots` as a LongTensor [len(slots)], extended incrementally: O(new slots) per step, not O(L).

        Invariant: slots only ever grow by appending (push, absorb), so the mirrored prefix stays valid.
        """
        n = len(self.slots)
        if self._table is None or self._table.numel() < n:
            with torch.inference_mode(False):  # a normal tensor, so it may be extended outside the forward too
                grown = torch.empty(max(64, 2 * n), dtype=torch.long)
            if self._table is not None:
                grown[: self._table_len] = self._table[: self._table_len]
            self._table = grown
        if self._table_len < n:
            self._table[self._table_len : n] = torch.tensor(self.slots[self._table_len : n], dtype=torch.long)
            self._table_len = n
        return self._table[:n]

    @property
    def num_computed(self) -> int:
        """Leading table entries whose KV exists; the pending tokens follow them."""
        return len(self.slots) - len(self.pending_ids)

    def computed(self, n: int) -> None:
        """The forward computed the first n pending tokens (all of them, or a prompt chunk)."""
        del self.pending_ids[:n]
        del self.pending_pos[:n]
        if not self.pending_ids:
            self.prefill_mask = None

    # ------------------------------------------------------------------ KV slots
    def push(self, pool: KVPool, token: int, logprob: float | None) -> None:
        """Append one token already stepped through `state`: a slot, a pending forward, a place in the tree."""
        self.append_pending(pool, token, self.state.position)
        self.tokens.append(token)
        self.logprobs.append(logprob)
        if self.guard is not None:
            self.guard.step(token)

    def append_pending(self, pool: KVPool, token: int, position: int) -> None:
        """A fresh slot for `token` at the end of the table (a page when the tail is full), computed next forward."""
        if self.tail_free == 0:
            self.pages.append(pool.alloc())
            self.tail_free = pool.page_size
        slot = self.pages[-1] * pool.page_size + (pool.page_size - self.tail_free)
        self.tail_free -= 1
        if self.slots and slot != self.slots[-1] + 1:
            self.contiguous = False
        self.slots.append(slot)
        self.visible.append(token)
        self.pending_ids.append(token)
        self.pending_pos.append(position)

    def fork_child(self, pool: KVPool, label: str, state: BranchState) -> "Branch":
        """A child that reads this branch's slots through shared page references (no KV copied)."""
        pool.incref(self.pages)
        return Branch(
            label=label,
            state=state,
            parent=self,
            depth=self.depth + 1,
            slots=list(self.slots),
            visible=list(self.visible),
            pages=list(self.pages),
            num_shared=len(self.slots),
            num_shared_pages=len(self.pages),
            contiguous=self.contiguous,
            _table=self.table().clone() if self.slots else None,
            _table_len=len(self.slots),
        )

    def absorb(self, pool: KVPool, children: list["Branch"]) -> None:
        """Merge: table becomes prefix + child 1 + ... + child n; children's own pages move here, shared refs drop."""
        for child in children:
            self.slots += child.slots[child.num_shared :]
            self.visible += child.visible[child.num_shared :]
            self.pages += child.pages[child.num_shared_pages :]
            pool.decref(child.pages[: child.num_shared_pages])
            child.pages = []
        self.tail_free = children[-1].tail_free  # the last child's last page is now this branch's tail
        self.contiguous = False

    def release(self, pool: KVPool) -> None:
        """Drop every page reference this branch holds (finish, abort, preemption)."""
        pool.decref(self.pages)
        self.pages, self.tail_free = [], 0

    # ------------------------------------------------------------------ tree
    def walk(self) -> "list[Branch]":
        """This branch and all its descendants, depth first in path order."""
        out = [self]
        for _, children in self.forks:
            for child in children:
                out += child.walk()
        return out

    def flatten(self) -> tuple[list[int], list[float | None], list[bool]]:
        """Final merged order: own tokens with each fork's children inserted at the fork point.

        Returns (ids, logprobs, forced) where forced[i] is True at tokens the engine placed.
        """
        ids: list[int] = []
        lps: list[float | None] = []
        start = 0
        for at, children in self.forks:
            ids += self.tokens[start:at]
            lps += self.logprobs[start:at]
            for child in children:
                c_ids, c_lps, _ = child.flatten()
                ids += c_ids
                lps += c_lps
            start = at
        ids += self.tokens[start:]
        lps += self.logprobs[start:]
        return ids, lps, [lp is None for lp in lps]

    def flat_entropies(self) -> list[float | None]:
        """Aligned with `flatten()`'s ids: the entropy at each sampled token, None at forced and prompt tokens."""
        own = [self.entropies.get(i) for i in range(len(self.tokens))]
        out: list[float | None] = []
        start = 0
        for at, children in self.forks:
            out += own[start:at]
            for child in children:
                out += child.flat_entropies()
            start = at
        return out + own[start:]
