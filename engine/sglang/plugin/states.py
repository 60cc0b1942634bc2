"""Scan states per radix-tree node: where a request's layout resumes, so a call scans only what it adds.

SGLang's tree maps token prefixes to nodes; the state stored for (node, rules) is the core's scan after the
whole prefix that ends at that node. SGLang never re-mints a node handle (a split gives the new parent a new
handle; the suffix keeps its handle and its end), and the tree reports each node's exact end on the path to
it (`collect_path_info`), so a state is used for a node only when its length equals that end. Bounded: the
least recently used states are dropped. Pure Python: the tree is seen only through `path_of(node)`, the
(node, end offset) pairs from the root (excluded) to the node.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from engine.sglang.plugin.request_layout import RequestLayout
from engine.sglang.plugin.structure import StateOf, merged_layout
from multiverse.attention import LayoutScan, StructureRules
from multiverse.tags import StructureVocab

PathOf = Callable[[Any], "Sequence[tuple[Any, int]]"]  # node -> [(node, end)] from below the root down to it


class ScanStates:
    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[Hashable, StructureRules], LayoutScan] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def child_state(self, node: Hashable, depth: int, rules: StructureRules, length: int) -> LayoutScan | None:
        """The state for a child's ids of `length` tokens matched `depth` deep, ending at `node`; None unless all cached."""
        return self.get(node, rules, length) if depth == length else None

    def get(self, node: Hashable, rules: StructureRules, end: int) -> LayoutScan | None:
        """The state stored for node if it ends where the node ends."""
        state = self._states.get((node, rules))
        if state is None or state.length != end:
            return None
        self._states.move_to_end((node, rules))
        return state

    def put(self, node: Hashable, rules: StructureRules, state: LayoutScan) -> None:
        self._states[(node, rules)] = state
        self._states.move_to_end((node, rules))
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def layout(self, ids: Sequence[int], node: Any, depth: int, path_of: PathOf, vocab: StructureVocab,
               rules: StructureRules, current: RequestLayout | None = None, children: StateOf | None = None) -> RequestLayout:
        """The layout of ids, where ids[:depth] is cached and ends at `node`: `current` (the request's layout from
        an earlier match) while it covers ids[depth:]; else resumed from `node`'s state (the usual case: the call
        continues the sequence an earlier call inserted), else from the deepest node on the path with a state,
        storing a state at every node passed on the way down (so the next call starts lower).

        Also saves the state where a merge request's merged node will end. A merge request matched up to its
        path 1 is laid out from its children's states instead (structure.merged_layout, through `children`:
        ids -> the state at the tree node where those ids end), so its paths 2..n are not scanned again.
        Cost: O(len(ids) - end of that node), + O(nodes on the path) when `node` has no state; for such a merge,
        O(depth + tags of paths 2..n) besides the children's lookups.
        """
        if current is not None and current.rules == rules and current.start <= depth and current.end >= len(ids):
            return current
        anchor = self.get(node, rules, depth) if 0 < depth <= len(ids) else None  # the common case: no walk
        if anchor is not None and children is not None:
            merged = merged_layout(ids, anchor, children, vocab)
            if merged is not None:
                return merged
        path = [] if anchor is not None or not depth else [(n, e) for n, e in path_of(node) if e <= min(depth, len(ids))]
        k = len(path)
        while k > 0 and anchor is None:
            k -= 1
            anchor = self.get(path[k][0], rules, path[k][1])
        lay = RequestLayout(anchor.copy() if anchor is not None else LayoutScan(vocab, rules))
        for n, end in path[k + 1 if anchor is not None else 0 :]:
            lay.extend(ids[lay.end : end])
            self.put(n, rules, lay.scan.copy())
        lay.extend(ids[lay.end : len(ids) - 1])
        if ids and ids[-1] == vocab.tags.conclusion_open:  # a merge request: its merged node ends here
            lay.save()
        lay.extend(ids[lay.end :])
        return lay

    def keep(self, node: Hashable, depth: int, lay: RequestLayout) -> None:
        """Store lay's state after `depth` tokens for `node` (that prefix ends there), when lay has it."""
        state = lay.state_at(depth)
        if state is not None:
            self.put(node, lay.rules, state)

    def keep_inserted(self, lay: RequestLayout, node: Any, depth: int, ids_to: Callable[[int, int], list[int]]) -> None:
        """After the request's first `depth` ids were inserted, ending at `node`: the state there, which the
        call continuing this sequence resumes from. `ids_to(a, b)` gives its ids [a, b) (decoded ones too)."""
        if lay.end < depth:  # the tokens it decoded: O(new tokens), once
            lay.extend(ids_to(lay.end, depth))
        self.keep(node, depth, lay)
