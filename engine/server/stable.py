"""The stable prefix of a request's final merged token order, built incrementally from its stream events.

Final order (SPEC §5): a branch's own tokens, with each fork's children inserted at the fork point, path 1
before path 2. A token is stable once nothing can be inserted before it: the root's tokens until it forks,
then path 1's tokens as they are written, path 2's once path 1 has closed, and so on (nested blocks alike).

`StableOrder.take()` returns only the ids that became stable since the last call, so streaming costs
O(new tokens) per step, never a walk over the whole tree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import BranchClosed, BranchOpened, Event, Merged, Restarted, Tokens


@dataclass(eq=False)
class _Node:
    """One branch: segments in final order, each a run of own token ids or a child branch."""

    segments: list["list[int] | _Node"] = field(default_factory=list)
    closed: bool = False


@dataclass
class _Frame:
    node: _Node
    segment: int = 0  # index into node.segments
    offset: int = 0  # ids of that segment already taken (token runs only)


class StableOrder:
    def __init__(self, skip: int = 0) -> None:
        self.root = _Node()
        self._by_label: dict[str, _Node] = {"": self.root}  # a label reused by a later block maps to the newest
        self._stack = [_Frame(self.root)]
        self._skip = skip  # ids already delivered before a restart: the replay reproduces them
        self.taken = skip  # ids delivered so far, counting those before a restart

    def apply(self, event: Event) -> "StableOrder":
        """Record one event; returns the order to keep using (a new one after a restart)."""
        if isinstance(event, Tokens):
            node = self._by_label[event.label]
            if not node.segments or isinstance(node.segments[-1], _Node):
                node.segments.append([])
            node.segments[-1].extend(event.token_ids)
        elif isinstance(event, BranchOpened):
            child = _Node()
            self._by_label[event.parent].segments.append(child)
            self._by_label[event.label] = child
        elif isinstance(event, BranchClosed):
            self._by_label[event.label].closed = True
        elif isinstance(event, Restarted):  # branches start over with the same seed: skip what was delivered
            return StableOrder(skip=self.taken)
        elif isinstance(event, Merged):
            pass  # the children closed already; the parent's next tokens follow them
        return self

    def take(self) -> list[int]:
        """Ids that became stable since the last call, in final merged order."""
        out: list[int] = []
        stack = self._stack
        while stack:
            frame = stack[-1]
            segments = frame.node.segments
            if frame.segment >= len(segments):
                if not frame.node.closed or len(stack) == 1:
                    break  # the branch may still write; the root never closes (Finished ends it)
                stack.pop()
                continue
            seg = segments[frame.segment]
            if isinstance(seg, _Node):
                frame.segment += 1
                stack.append(_Frame(seg))
                continue
            out += seg[frame.offset :]
            frame.offset = len(seg)
            if frame.segment + 1 < len(segments) or (frame.node.closed and len(stack) > 1):
                frame.segment, frame.offset = frame.segment + 1, 0
            else:
                break  # the run may still grow
        return self._drop_replayed(out)

    def _drop_replayed(self, ids: list[int]) -> list[int]:
        if self._skip:
            drop = min(self._skip, len(ids))
            self._skip -= drop
            ids = ids[drop:]
        self.taken += len(ids)
        return ids
