"""`.stream()` events tell the whole story of the branches; the server's stable prefix never has to retract."""
from __future__ import annotations

import pytest

from engine.api import MultiverseLM
from engine.events import BranchClosed, BranchOpened, Finished, Merged, Tokens
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from engine.server.stable import StableOrder
from multiverse.encode import encode_trace
from multiverse.tiny import build_model

TRACE = (
    "<Parallel><Goal>plan<Outline>1: a</Outline><Outline>2: b</Outline></Goal><Path>1: the sum"
    "<Parallel><Goal><Outline>1.1: x</Outline><Outline>1.2: y</Outline></Goal><Path>1.1: so 12</Path>"
    "<Path>1.2: then 7</Path><Conclusion>ok</Conclusion></Parallel></Path><Path>2: check x</Path>"
    "<Conclusion>so 12</Conclusion></Parallel> done"
)


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, seed=2)


def test_stream_events_rebuild_every_branch(tok, model):
    p_ids = tok("Consider")["input_ids"]
    target = p_ids + encode_trace(TRACE, tok) + [tok.eos_token_id]
    lm = MultiverseLM(model, tok, check_integrity=True)
    params = SamplingParams(temperature=0, logits_processors=[ScriptedProcessor(target, len(p_ids), tok)])
    text: dict[str, str] = {}
    opened, closed, merged, finished = [], [], [], []
    order, stable = StableOrder(), []
    for event in lm.stream([p_ids, "x"], [params, SamplingParams(max_new_tokens=5, seed=0)]):
        if event.request_id != 0:
            continue
        order = order.apply(event)
        stable += order.take()  # the server's streamed prefix only ever grows along the final ids
        assert stable == target[len(p_ids) : len(p_ids) + len(stable)]
        if isinstance(event, Tokens):
            text[event.label] = text.get(event.label, "") + event.text
        elif isinstance(event, BranchOpened):
            opened.append((event.parent, event.label))
        elif isinstance(event, BranchClosed):
            closed.append(event.label)
        elif isinstance(event, Merged):
            merged.append((event.label, event.children))
        elif isinstance(event, Finished):
            finished.append(event.output)
    assert opened == [("", "1"), ("", "2"), ("1", "1.1"), ("1", "1.2")]
    assert sorted(closed) == ["1", "1.1", "1.2", "2"]
    assert merged == [("1", ("1.1", "1.2")), ("", ("1", "2"))]
    (out,) = finished
    tree = {b.label: b.text for b in out.tree}
    assert {label: text[label] for label in ("1", "2", "1.1", "1.2")} == {k: tree[k] for k in ("1", "2", "1.1", "1.2")}
    assert out.prompt_token_ids + out.token_ids == target
    assert stable == out.token_ids  # every id was delivered, nested paths in final merged order
    assert lm.pool.num_used == 0


LONG = "one two three four five six seven eight nine ten " * 4
WIDE = (  # three long paths, the first nesting two more: five paths open at once
    "<Parallel><Goal><Outline>1: a</Outline><Outline>2: b</Outline><Outline>3: c</Outline></Goal><Path>1: first"
    f"<Parallel><Goal><Outline>1.1: x</Outline><Outline>1.2: y</Outline></Goal><Path>1.1: {LONG}</Path>"
    f"<Path>1.2: {LONG}</Path><Conclusion>ok</Conclusion></Parallel></Path><Path>2: {LONG}</Path>"
    f"<Path>3: {LONG}</Path><Conclusion>c</Conclusion></Parallel> done"
)


@pytest.mark.parametrize("budget", [dict(max_new_tokens=120), dict(max_critical_tokens=55)])
def test_a_stream_cut_by_a_budget_closes_every_path_it_opened(tok, model, budget):
    p_ids = tok("Consider")["input_ids"]
    target = p_ids + encode_trace(WIDE, tok) + [tok.eos_token_id]
    lm = MultiverseLM(model, tok, check_integrity=True)
    params = SamplingParams(logits_processors=[ScriptedProcessor(target, len(p_ids), tok)], **budget)
    opened, closed, text, out = [], {}, {}, None
    for event in lm.stream(p_ids, params):
        if isinstance(event, BranchOpened):
            opened.append(event.label)
        elif isinstance(event, BranchClosed):
            assert event.label not in closed  # once each
            closed[event.label] = event.reason
        elif isinstance(event, Tokens):
            text[event.label] = text.get(event.label, "") + event.text
        elif isinstance(event, Finished):
            out = event.output
    cut = out.finish_reason
    assert cut in ("length", "critical_length")
    assert sorted(opened) == ["1", "1.1", "1.2", "2", "3"] and sorted(closed) == sorted(opened)
    assert list(closed.values()).count(cut) == 5  # all five were open when the budget hit
    tree = {b.label: b for b in out.tree}
    assert {label: tree[label].finish_reason for label in closed} == closed
    assert {label: text[label] for label in opened} == {label: tree[label].text for label in opened}
    assert lm.pool.num_used == 0
