"""Scan states per radix-tree node: where a request's layout resumes, so a call scans only what it adds.

SGLang's tree maps token prefixes to nodes; the state stored for (node, rules) is the core's scan after the
whole prefix that ends at that node. A node id is never reused (SGLang's ids count up), and a split keeps the
suffix node's id and its end, so a state is valid for a node iff its length equals the node's depth, which is
checked: depths are counted from the states found, and a walk that does not land where SGLang's match ends
stores nothing. Bounded: the least recently used states
are dropped. Pure Python: the tree is seen only through `parent_of(node) -> (parent, key length) | None`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from itertools import accumulate
from typing import Any

from engine.sglang.plugin.request_layout import RequestLayout
from multiverse.attention import LayoutScan, StructureRules
from multiverse.tags import StructureVocab

ParentOf = Callable[[Any], "tuple[Any, int] | None"]  # node -> (its parent, its key length); None at a root


class ScanStates:
    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[Hashable, StructureRules], LayoutScan] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, node: Hashable, rules: StructureRules) -> LayoutScan | None:
        state = self._states.get((node, rules))
        if state is not None:
            self._states.move_to_end((node, rules))
        return state

    def put(self, node: Hashable, rules: StructureRules, state: LayoutScan) -> None:
        self._states[(node, rules)] = state
        self._states.move_to_end((node, rules))
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def layout(self, ids: Sequence[int], node: Any, depth: int, parent_of: ParentOf, vocab: StructureVocab,
               rules: StructureRules, current: RequestLayout | None = None) -> RequestLayout:
        """The layout of ids, where ids[:depth] ends at `node` of the tree: `current` (the request's layout from
        an earlier match) while it covers ids[depth:]; else resumed from the deepest ancestor of `node` with a
        state, storing a state at every node passed on the way down (so the next call starts lower).

        Depths are counted down from that ancestor (a state's length is its node's depth); states are stored
        only when the count lands on `depth`, else the walk is not trusted and ids are scanned from 0. Also
        saves the states where the prompt's node and (a merge request's) merged node will end.
        Cost: O(len(ids) - depth of that ancestor) + O(nodes walked).
        """
        if current is not None and current.rules == rules and current.start <= depth and current.end >= len(ids):
            return current
        chain: list[tuple[Any, int]] = []  # nodes without a state below the anchor, deepest first, key lengths
        anchor = self.get(node, rules)
        while anchor is None:
            up = parent_of(node)
            if up is None:  # a root: depth 0
                break
            chain.append((node, up[1]))
            node = up[0]
            anchor = self.get(node, rules)
        ends = list(accumulate((n for _, n in reversed(chain)), initial=anchor.length if anchor else 0))
        if ends[-1] != depth or ends[-1] > len(ids):
            chain, anchor = [], None  # not where SGLang says the match ends: trust nothing, scan all
        lay = RequestLayout(anchor.copy() if anchor is not None else LayoutScan(vocab, rules))
        for (node, _), end in zip(reversed(chain), ends[1:]):
            lay.extend(ids[lay.end : end])
            self.put(node, rules, lay.scan.copy())
        lay.extend(ids[lay.end : len(ids) - 1])
        if ids and ids[-1] == vocab.tags.conclusion_open:  # a merge request: its merged node ends here
            lay.save()
        lay.extend(ids[lay.end :])
        lay.save()
        return lay

    def keep(self, node: Hashable, depth: int, lay: RequestLayout) -> None:
        """Store lay's state after `depth` tokens for `node` (that prefix ends there), when lay has it."""
        state = lay.state_at(depth)
        if state is not None:
            self.put(node, lay.rules, state)

    def keep_inserted(self, lay: RequestLayout, node: Any, depth: int, prompt: int, parent_of: ParentOf,
                      ids_to: Callable[[int, int], list[int]]) -> None:
        """After the request's first `depth` ids were inserted, ending at `node`: the states there and at the
        node where its prompt (`prompt` tokens) ends. `ids_to(a, b)` gives its ids [a, b) (decoded ones too)."""
        if lay.end < depth:  # the tokens it decoded: O(new tokens), once
            lay.extend(ids_to(lay.end, depth))
        self.keep(node, depth, lay)
        while depth > prompt and (up := parent_of(node)) is not None:
            node, depth = up[0], depth - up[1]
        if depth == prompt:
            self.keep(node, depth, lay)
