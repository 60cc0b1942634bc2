"""A server's calls into the plugin, without a server: for the overhead benchmark and the tests.

`PrefixTree` stands in for SGLang's radix tree where the plugin sees it (node ids that are never reused, a
split keeps the suffix node's id, a match ends at a node). `client_calls` cuts a trace into the calls the
SGLang client makes (a segment per branch stretch, at most `cap` tokens; a fork's children, a path's closing
call, a merge). `ServedCall` runs one call the way the server runs the plugin: match_prefix (layout resumed
from the tree, masked check, merge plan), the extend's positions, decode, then the insert's scan states.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

from engine.sglang.plugin.positions import OFFSET, extend_positions
from engine.sglang.plugin.request_layout import LAYOUT, ids_between, request_ids
from engine.sglang.plugin.states import ScanStates
from engine.sglang.plugin.structure import MergePlan, child_ids, merge_plan, rules_to_params
from multiverse.attention import StructureRules, layout
from multiverse.tags import StructureVocab


@dataclass
class _Node:
    id: int
    key: list[int]
    parent: "_Node | None"
    children: dict[int, "_Node"] = field(default_factory=dict)


class PrefixTree:
    def __init__(self) -> None:
        self._ids = itertools.count()
        self.root = _Node(next(self._ids), [], None)
        self.nodes = {self.root.id: self.root}

    def path_of(self, node: int) -> list[tuple[int, int]]:
        """(node, end offset) from below the root down to `node` (SGLang's collect_path_info)."""
        chain, n = [], self.nodes[node]
        while n.parent is not None:
            chain.append(n)
            n = n.parent
        out, end = [], 0
        for n in reversed(chain):
            end += len(n.key)
            out.append((n.id, end))
        return out

    def match(self, ids: list[int]) -> tuple[int, int]:
        """(node, depth) of the longest cached prefix of ids; a partly matched node is split there."""
        node, depth = self.root, 0
        while depth < len(ids) and ids[depth] in node.children:
            child = node.children[ids[depth]]
            k = len(child.key)
            if ids[depth : depth + k] != child.key:  # a partial match: find where it ends
                k = next(i for i, t in enumerate(child.key) if depth + i >= len(ids) or ids[depth + i] != t)
            if k < len(child.key):
                child = self._split(child, k)
            node, depth = child, depth + k
        return node.id, depth

    def insert(self, ids: list[int]) -> int:
        node, depth = self.match(ids)
        n = self.nodes[node]
        if depth < len(ids):
            new = _Node(next(self._ids), list(ids[depth:]), n)
            n.children[ids[depth]] = new
            self.nodes[new.id] = new
            return new.id
        return node

    def _split(self, child: _Node, k: int) -> _Node:
        """The first k tokens of child become a new parent node; child keeps its id and its end."""
        assert child.parent is not None
        head = _Node(next(self._ids), child.key[:k], child.parent, {child.key[k]: child})
        child.parent.children[child.key[0]] = head
        child.key, child.parent = child.key[k:], head
        self.nodes[head.id] = head
        return head


@dataclass(frozen=True)
class Served:
    call: "Call"
    positions: list[int]  # the extend's positions (tokens depth..len(ids) of the call)
    matched: int  # tokens of the call SGLang found cached
    depth: int  # the same after a merge built the merged node: where the extend starts
    plan: MergePlan | None  # a merge request's plan
    seconds: float  # the plugin's time in the call: match, merge, extend, insert
    decode_seconds: float  # the plugin's time in the call's decode steps
    scanned: int  # tokens the plugin's scan went over for this call (at match and at insert)
    from_children: bool = False  # a merge laid out from its children's stored states (no scan of paths 2..n)


@dataclass(frozen=True)
class Call:
    ids: list[int]  # what the client sends (the branch's visible ids, forced tokens included)
    out: list[int]  # what the server decodes


def client_calls(target: list[int], vocab: StructureVocab, cap: int = 256) -> Iterator[Call]:
    """The calls a client makes to follow `target`: each branch stretch in segments of at most `cap` tokens,
    a new call at every fork (a child's first token), path end (a 1-token call with the </Path>) and merge."""
    lay = layout(target, vocab)
    hidden = [tuple((lo, hi) for lo, hi in zip(a, b) if hi > lo) for a, b in zip(lay.hidden_lo.tolist(), lay.hidden_hi.tolist())]
    t = vocab.tags
    starts_call = {t.path_open, t.conclusion_open}
    ends_call = {t.goal_close, t.path_close}

    def visible(j: int) -> list[int]:  # what token j's branch sees, itself included
        out, at = [], 0
        for lo, hi in sorted(hidden[j]):
            out += target[at:lo]
            at = hi
        return out + target[at : j + 1]

    s = 0
    while s < len(target):
        e = s
        while e + 1 < len(target) and e - s < cap and target[e] not in ends_call and target[e + 1] not in starts_call:
            e += 1
        yield Call(visible(s), target[s + 1 : e + 1])
        if target[e] == t.path_close and e > s:
            yield Call(visible(e), [])
        s = e + 1


class ServedCall:
    """The plugin's work for one call, in the steps where SGLang calls it; SGLang's own work (the tree's match
    and insert, the forwards) happens between the steps. `req` is the request's state as the plugin sees it."""

    def __init__(self, states: ScanStates, tree: PrefixTree, vocab: StructureVocab, rules: StructureRules, call: Call,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self.states, self.tree, self.vocab, self.rules, self.clock = states, tree, vocab, rules, clock
        self.req = SimpleNamespace(origin_input_ids=call.ids, output_ids=[],
                                   sampling_params=SimpleNamespace(custom_params=rules_to_params(rules)))
        self.tree_seconds = 0.0  # time in the tree's matches of a merge's children (SGLang's work, not the plugin's)

    def match(self, node: int, depth: int) -> MergePlan | None:
        """match_prefix: the request's layout and, for a merge request, its plan (else None)."""
        ids = request_ids(self.req)
        lay = self.states.layout(ids, node, depth, self.tree.path_of, self.vocab, self.rules, getattr(self.req, LAYOUT, None),
                                 self._child_state)
        setattr(self.req, LAYOUT, lay)
        if lay.plan is not None:  # a merge laid out from its children's states
            return lay.plan
        masked = lay.first_masked(depth)
        if masked is None:
            return None
        plan = merge_plan(ids, lay, masked, self.vocab)
        if not isinstance(plan, MergePlan):
            raise ValueError(f"a call of {len(ids)} tokens needs the mask at token {masked} but is no merge: {plan}")
        return plan

    def _child_state(self, ids: Sequence[int], first: int, span: tuple[int, int]) -> object:
        """A merge child's state: the tree's match of its own sequence, key built (SGLang's work, which the merged
        node's build makes anyway: not timed), then the state kept where it ends."""
        t0 = self.clock()
        child = child_ids(ids, first, span)
        node, depth = self.tree.match(child)
        self.tree_seconds += self.clock() - t0
        return self.states.child_state(node, depth, self.rules, len(child))

    def merged(self, node: int, depth: int) -> None:
        """After the merged node is built and matched again: nothing is left uncached; keep its state."""
        lay = getattr(self.req, LAYOUT)
        assert lay.first_masked(depth) is None
        self.states.keep(node, depth, lay)

    def extend(self, prefix: int) -> list[int]:
        """The position hook on the extend of tokens [prefix, len(ids))."""
        n = len(self.req.origin_input_ids)
        return extend_positions(self.req, prefix, n - prefix, self.vocab)

    def decode(self, token: int) -> int:
        """One decode step (the token joins output_ids): its position, index + offset."""
        self.req.output_ids.append(token)
        return len(self.req.origin_input_ids) + len(self.req.output_ids) - 2 + getattr(self.req, OFFSET)

    def finished(self, node: int, depth: int) -> None:
        """checkpoint_into_tree: the state at the inserted sequence's node."""
        self.states.keep_inserted(getattr(self.req, LAYOUT), node, depth, lambda a, b: ids_between(self.req, a, b))


def replay(target: list[int], vocab: StructureVocab, rules: StructureRules = StructureRules(), cap: int = 256,
           clock: Callable[[], float] = time.thread_time, settle: Callable[[], object] = lambda: None) -> Iterator[Served]:
    """Serve every call of `target` through the plugin, one `Served` per call; `settle()` runs before each
    timed step (e.g. the same cache flush at every length).

    Only the plugin's steps are timed; the tree's match (SGLang matches all but the last id, which the extend
    must compute) and insert (the merged node; the sequence when it finishes) stand for SGLang's own work.
    A merge's lookups of its children in the tree (SGLang's match, which building the merged node does anyway) are
not timed either. The clock is this thread's CPU time by default: on a loaded machine, wall time would count
other processes.
    """
    tree, states = PrefixTree(), ScanStates()
    for call in client_calls(target, vocab, cap):
        served = ServedCall(states, tree, vocab, rules, call, clock)
        node, depth = tree.match(call.ids[:-1])
        matched = depth
        settle()
        t0 = clock()
        plan = served.match(node, depth)
        spent = clock() - t0
        if plan is not None:
            tree.insert(call.ids[: plan.conclusion])
            node, depth = tree.match(call.ids[:-1])
            settle()
            t0 = clock()
            served.merged(node, depth)
            spent += clock() - t0
        settle()
        t0 = clock()
        positions = served.extend(depth)
        t1 = clock()
        for token in call.out:
            served.decode(token)
        t2 = clock()
        seq = call.ids + call.out
        cached = len(seq) - 1 if call.out else len(seq)  # the last decoded token has no KV
        node = tree.insert(seq[:cached])
        settle()
        t3 = clock()
        served.finished(node, cached)
        t4 = clock()
        lay = getattr(served.req, LAYOUT)
        spent += (t1 - t0) + (t4 - t3) - served.tree_seconds
        yield Served(call, positions, matched, depth, plan, spent, t2 - t1, lay.end - lay.start, lay.plan is not None)
