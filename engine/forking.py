"""Fork and merge for the Scheduler (SPEC §5): children on the parent's KV, the parent reading their paths.

Invariants:
- a fork copies no KV: every child takes a reference on each page of its parent (its `</Goal>` included) and
  starts with `<Path> LABEL :` forced; children are attached to the tree only once all of them are built, so a
  failure midway drops every page reference taken (nothing leaks);
- a held-back child (`max_concurrent_paths`, `engine/path_cap.py`) is DEFERRED, sees only the prefix, and
  starts when a sibling closes; the merge order is always the label order;
- merge="reuse": the parent's table gets prefix + path 1 + ... + path n (the children's KV as computed) and
  `<Conclusion>` is forced at position max(end positions) + 1; merge="refresh" (`engine/refresh.py`) drops the
  children's KV and re-encodes the joined paths causally before `<Conclusion>`;
- neither merge happens when the `<Conclusion>` (and the closers the request still owes) would pass the
  request's position cap: the request finishes with its cap reason instead.

`ForkMergeMixin` is a part of `engine.scheduler.Scheduler` (as is `engine.admission.AdmissionMixin`);
it holds no state of its own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine import path_cap, refresh
from engine.branch import Branch, Status
from engine.events import BranchClosed, BranchOpened, Event, Merged
from engine.kv_pool import KVPool
from engine.positions import closers
from engine.request import Phase, Request
from multiverse.attention.scanner import Fork, PathEnd
from multiverse.tags import StructureVocab


class ForkMergeMixin:
    """Opening children at `</Goal>` (`_fork`), closing a path (`_path_end`) and joining a block (`_merge`)."""

    pool: KVPool
    vocab: StructureVocab

    if TYPE_CHECKING:  # provided by Scheduler and AdmissionMixin
        def _finish(self, request: Request, reason: str) -> None: ...
        def _emit(self, request: Request, event: Event) -> None: ...
        def _emit_tokens(self, request: Request, branch: Branch, tokens: list[int], forced: bool) -> None: ...
        def _consume(self, request: Request, branch: Branch, token: int, logprob: float | None) -> None: ...
        def _make_room(self, request: Request, pages: int) -> bool: ...

    def _fork(self, request: Request, parent: Branch, event: Fork, prefixes: list[list[int]]) -> None:
        """Children share the parent's pages (its </Goal> included) and start with <Path> LABEL ":" forced.

        Exception-safe: the children are attached to the tree only when all of them are built; if building
        one fails (e.g. no page for its prefix), every page reference taken so far is dropped again.
        """
        children: list[Branch] = []
        confidences = [1.0] * len(prefixes)  # label order unless a cap asks for the outlines' confidences
        if path_cap.capped(request.params):
            found = path_cap.outline_confidences(parent.tokens, parent.logprobs, self.vocab.tags)
            confidences = found if len(found) == len(prefixes) else confidences
        order, limit = path_cap.plan(confidences, request.params)
        held = set(order[limit:]) if limit is not None else set()
        try:
            for i, (label, prefix) in enumerate(zip(event.labels, prefixes)):
                child = parent.fork_child(self.pool, label, parent.state.child(event.goal_position))
                children.append(child)
                child.key = f"{parent.key}>{len(parent.forks)}/{label}" if parent.key else f"{len(parent.forks)}/{label}"
                child.generator = request.generator_for(child.key)
                child.prefix = prefix
                child.guard = parent.guard.child(label) if parent.guard is not None else None
                child.owed = parent.owed + closers(parent)
                if i in held:
                    child.status = Status.DEFERRED
                else:
                    self._place_prefix(child)
        except BaseException:
            for child in children:
                child.release(self.pool)
            raise
        parent.status = Status.WAITING
        parent.forks.append((len(parent.tokens), children))
        parent.queue = [children[i] for i in order if i in held]
        request.num_forks += 1
        for child in children:
            self._emit(request, BranchOpened(request.request_id, child.label, parent.label))
            if child.status is not Status.DEFERRED:
                self._started(request, child)

    def _place_prefix(self, child: Branch) -> None:
        for token in child.prefix:
            child.state.step(token)
            child.push(self.pool, token, None)

    def _started(self, request: Request, child: Branch) -> None:
        request.max_position = max(request.max_position, child.state.position)
        self._emit_tokens(request, child, child.prefix, True)

    def _start_held(self, request: Request, parent: Branch) -> None:
        """A path closed: the next held-back sibling starts (its forced prefix gets pages and decodes next step)."""
        if not parent.queue:
            return
        child = parent.queue[0]
        if not self._make_room(request, self.pool.pages_for(len(child.prefix), 0)):
            return
        parent.queue.pop(0)
        child.status = Status.RUNNING
        self._place_prefix(child)
        self._started(request, child)

    def _path_end(self, request: Request, branch: Branch, event: PathEnd) -> None:
        branch.end_position = event.position
        branch.status = Status.CLOSING
        branch.finish_reason = branch.finish_reason or "path_end"
        self._emit(request, BranchClosed(request.request_id, branch.label, branch.finish_reason))
        parent = branch.parent
        siblings = parent.forks[-1][1]
        self._start_held(request, parent)
        if request.phase is Phase.RUNNING and all(s.status is Status.CLOSING for s in siblings):
            self._merge(request, parent, siblings)

    def _merge(self, request: Request, parent: Branch, children: list[Branch]) -> None:
        """Parent reads prefix + child 1 + ... + child n (KV as computed); <Conclusion> forced at m + 1."""
        if request.params.merge == "refresh":
            return self._merge_refresh(request, parent, children)
        m = max(c.end_position for c in children)
        if m + 1 + closers(parent) + parent.owed > request.position_cap:  # no room for <Conclusion>
            self._finish(request, request.cap_reason)
            return
        if not self._make_room(request, self.pool.pages_for(1, children[-1].tail_free)):
            return
        parent.absorb(self.pool, children)
        for child in children:
            child.status = Status.DONE
        parent.state.merged(m)
        parent.status = Status.RUNNING
        request.num_merges += 1
        self._emit(request, Merged(request.request_id, parent.label, tuple(c.label for c in children)))
        self._consume(request, parent, self.vocab.tags.conclusion_open, None)

    def _merge_refresh(self, request: Request, parent: Branch, children: list[Branch]) -> None:
        """merge="refresh" (engine/refresh.py): the children's KV is dropped, the joined paths are re-encoded."""
        tokens = refresh.joined(children)
        if parent.state.position + len(tokens) + 1 + closers(parent) + parent.owed > request.position_cap:
            self._finish(request, request.cap_reason)  # the re-encoded paths and <Conclusion> would pass the cap
            return
        for child in children:  # its last </Path> may still be pending: it is re-encoded, never written to its slot
            child.release(self.pool)
            child.pending_ids.clear()
            child.pending_pos.clear()
            child.status = Status.DONE
        if not self._make_room(request, self.pool.pages_for(len(tokens) + 1, parent.tail_free)):
            return
        last = refresh.reencode(self.pool, parent, tokens)
        parent.state.merged(last)
        parent.status = Status.RUNNING
        request.num_merges += 1
        request.refreshed_tokens.append(len(tokens))
        self._emit(request, Merged(request.request_id, parent.label, tuple(c.label for c in children)))
        self._consume(request, parent, self.vocab.tags.conclusion_open, None)
