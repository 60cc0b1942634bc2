"""The plugin's layouts in O(new tokens), without a server: every call a client makes for nested traces, driven
through the plugin's functions in the order SGLang calls them (engine/sglang/plugin/replay.py), gets exactly the
positions and merge plans of a whole-sequence scan, while the scan goes over only the tokens the call adds."""
from __future__ import annotations

import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import scripted_targets  # noqa: E402

from engine.sglang.plugin.positions import OFFSET, extend_positions  # noqa: E402
from engine.sglang.plugin.replay import PrefixTree, replay  # noqa: E402
from engine.sglang.plugin.request_layout import LAYOUT, RequestLayout  # noqa: E402
from engine.sglang.plugin.states import ScanStates  # noqa: E402
from engine.sglang.plugin.structure import MergePlan, child_ids, merge_plan, merged_layout, plan_merge, rules_to_params  # noqa: E402
from multiverse.attention import LayoutScan, StructureRules, layout  # noqa: E402
from multiverse.encode import encode_trace  # noqa: E402
from multiverse.synthetic import SyntheticShape, synthetic_trace  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402


def traces(tok):
    for _, target in scripted_targets(tok, 3, seed=11):
        yield target
    for seed in range(3):
        shape = SyntheticShape(max_depth=2, max_paths=4, words=(1, 4), block_chance=0.7)
        yield encode_trace(synthetic_trace(seed, 4, shape), tok)


@pytest.mark.parametrize("cap", [5, 64])
def test_every_call_gets_the_whole_scan_positions_and_plans(tok, cap: int) -> None:
    vocab = StructureVocab.from_tokenizer(tok)
    merges = calls = from_children = 0
    for target in traces(tok):
        for served in replay(target, vocab, cap=cap):
            ids = served.call.ids
            whole = RequestLayout.of(ids, vocab)
            assert served.positions == layout(ids, vocab).positions.tolist()[served.depth :]
            assert whole.first_masked(served.depth) is None  # after a merge too: nothing uncached needs the mask
            if served.plan is not None:  # the last masked token is in the block the merge closes
                assert served.plan == plan_merge(ids, whole, whole.first_masked(0), vocab)
                assert served.plan.conclusion == len(ids) - 1 and served.depth == len(ids) - 1
                merges += 1
                from_children += served.from_children  # from the children's states: <Conclusion> scanned, then what it decodes
                assert served.scanned <= 1 + len(served.call.out) or not served.from_children
            # what the plugin scanned: the tokens SGLang had not cached, those it decoded, at most one more
            assert served.scanned <= len(ids) - served.matched + len(served.call.out) + 1, (len(ids), served.matched)
            calls += 1
    assert merges >= 20 and calls >= 100 and from_children >= merges * 3 // 4


def test_a_state_is_used_only_where_its_node_ends(tok) -> None:
    """A state whose length is not its node's end (as the tree reports it) is never resumed from."""
    vocab = StructureVocab.from_tokenizer(tok)
    _, target = scripted_targets(tok, 1, seed=3)[0]
    tree, states = PrefixTree(), ScanStates()
    node = tree.insert(target[:40])
    states.put(node, StructureRules(), LayoutScan(vocab).copy())  # a wrong state: length 0 at a depth-40 node
    lay = states.layout(target, node, 40, tree.path_of, vocab, StructureRules())
    assert lay.start == 0 and lay.positions == layout(target, vocab).positions.tolist()
    good = RequestLayout.of(target[:40], vocab).scan
    states.put(node, StructureRules(), good)
    lay = states.layout(target, node, 40, tree.path_of, vocab, StructureRules())
    assert lay.start == 40 and lay.positions == layout(target, vocab).positions.tolist()[40:]


def test_states_are_bounded_and_keyed_by_rules(tok) -> None:
    vocab = StructureVocab.from_tokenizer(tok)
    states = ScanStates(capacity=3)
    for node in range(5):
        states.put(node, StructureRules(), LayoutScan(vocab))
    assert len(states) == 3 and states.get(0, StructureRules(), 0) is None and states.get(4, StructureRules(), 0) is not None
    assert states.get(4, StructureRules(True, 2, None), 0) is None and states.get(4, StructureRules(), 1) is None


def test_a_merge_plan_at_the_layout_boundary(tok) -> None:
    """Paths 2..n starting exactly where the layout resumes are planned from it; starting before, from all ids."""
    vocab = StructureVocab.from_tokenizer(tok)
    for _, target in scripted_targets(tok, 8, seed=5):
        for served in replay(target, vocab, cap=1 << 20):
            plan = served.plan
            if plan is None or len(plan.spans) < 2:
                continue
            ids = served.call.ids
            whole = RequestLayout.of(ids, vocab)
            masked = whole.first_masked(0)
            for start, exact in ((plan.spans[1][0], True), (plan.spans[1][0] + 1, False)):
                state = LayoutScan(vocab)
                state.extend(ids[:start])
                lay = RequestLayout(state)
                lay.extend(ids[start:])
                assert (plan_merge(ids, lay, masked, vocab) == plan) if exact else plan_merge(ids, lay, masked, vocab) is None
                assert merge_plan(ids, lay, masked, vocab) == plan and isinstance(plan, MergePlan)
            return
    raise AssertionError("no merge of two or more paths in the scripted targets")


class CountedIds(list):
    """A request's ids that count the items the plugin reads (by index, by slice, by index())."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__(ids)
        self.read = 0

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        got = super().__getitem__(key)
        self.read += len(got) if isinstance(key, slice) else 1
        return got

    def index(self, value, start=0, stop=None):  # noqa: ANN001, ANN201
        at = super().index(value, start, len(self) if stop is None else stop)
        self.read += 1  # one tag found (the C scan between tags is no Python work)
        return at


def test_a_merge_layout_reads_the_tags_of_its_block_not_the_sequence(tok) -> None:
    """Laid out from its children's states, a merge behind a long prefix reads a few ids per path of its block
    (its tags), never the prefix: a child's key (prefix + path) is built by the tree's lookup, not the plugin."""
    vocab = StructureVocab.from_tokenizer(tok)
    text = tok.encode(" and so on", add_special_tokens=False)
    for _, target in scripted_targets(tok, 8, seed=5):
        target = text * 2000 + target  # ~6K tokens of text before the first block
        for served in replay(target, vocab, cap=1 << 20):
            plan = served.plan
            if plan is None or len(plan.spans) < 3:
                continue
            ids = CountedIds(served.call.ids)
            anchor = LayoutScan(vocab)
            anchor.extend(list.__getitem__(ids, slice(0, plan.spans[0][1] + 1)))
            looked_up = []

            def state_of(seq, first: int, span: tuple[int, int]) -> LayoutScan:
                child = child_ids(list(seq), first, span)  # the tree's key (list() copies without __getitem__): not counted
                looked_up.append(child)
                state = LayoutScan(vocab)
                state.extend(child)
                return state

            ids.read = 0
            lay = merged_layout(ids, anchor, state_of, vocab)
            assert lay is not None and lay.plan == plan
            assert looked_up == [plan.child(list(ids), k) for k in range(1, len(plan.spans))]
            assert 0 < ids.read <= 4 * len(plan.spans) + 4, (ids.read, len(ids))
            assert lay.positions == layout(list(ids), vocab).positions.tolist()[plan.conclusion :]
            return
    raise AssertionError("no merge of three or more paths in the scripted targets")


def test_extend_positions_of_a_request(tok) -> None:
    vocab = StructureVocab.from_tokenizer(tok)
    _, target = scripted_targets(tok, 1, seed=6)[0]
    want = layout(target, vocab).positions.tolist()
    rng = random.Random(0)
    for _ in range(10):
        cut, pre = sorted(rng.sample(range(1, len(target)), 2))
        req = SimpleNamespace(origin_input_ids=target[:cut], output_ids=target[cut:], sampling_params=SimpleNamespace(
            custom_params=rules_to_params(StructureRules())))
        if rng.random() < 0.5:  # a layout from an earlier match that starts after `pre`: scanned again from 0
            state = LayoutScan(vocab)
            state.extend(target[: pre + 1])
            setattr(req, LAYOUT, RequestLayout(state))
        ext = rng.randint(1, len(target) - pre)
        assert extend_positions(req, pre, ext, vocab) == want[pre : pre + ext]
        assert getattr(req, OFFSET) == want[pre + ext - 1] - (pre + ext - 1)
    stub = SimpleNamespace(origin_input_ids=[1], output_ids=[], sampling_params=SimpleNamespace(custom_params=None))
    assert extend_positions(stub, 0, 3, vocab) is None  # not its tokens: SGLang's positions stay
