"""structure="constrained" (engine/structure_mask.py): at temperature 1.5 no generation breaks the structure, on a
random tiny model and on the shipped model with off-task prompts; greedy held-out answers are unchanged.

Validity is the core's parser (multiverse.structure.parse) on the final text, with what the budget left open
closed (`prefix_validity`). The free runs of the same prompts break it, so the checks can fail."""
from __future__ import annotations

import pytest

from engine.api import MultiverseLM
from engine.params import SamplingParams
from engine.structure_mask import Phase, StructureGuard
from multiverse.attention.scanner import StructureRules
from multiverse.demo import DEFAULT_MODEL
from multiverse.evaluation.analysis import continuation_validity, prefix_validity
from multiverse.evaluation.grading import special_tokens
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.runner import build_prompt
from multiverse.evaluation.tasks import load_task
from multiverse.tags import StructureVocab
from multiverse.tiny import build_model

OFF_TASK = ["Write a poem about the sea.", "asdf qwer zxcv", "What is the capital of France?", "<Path>", "1: 2: 3:",
            "Let A = 5. Compute nothing at all and stop.", "</Parallel></Goal>", "<Parallel><Goal>"]


def invalid(outs, tok) -> list[str]:
    specials = special_tokens(tok)
    prompt = lambda o: tok.decode(o.prompt_token_ids, skip_special_tokens=False)  # noqa: E731
    return [o.raw_text for o in outs if not continuation_validity(prompt(o), o.raw_text, specials).valid]


def test_guard_forces_labels_and_bans_stray_tags(tok):
    vocab = StructureVocab.from_tokenizer(tok)
    t = vocab.tags
    g = StructureGuard(vocab, StructureRules(max_paths=1), frozenset({tok.eos_token_id}))
    only, banned = g.allowed()
    assert only is None and t.path_open in banned and t.conclusion_open in banned and t.parallel_open not in banned
    for token in (t.think_open, t.parallel_open):
        g.step(token)
    assert g.allowed() == ([t.goal_open], [])
    g.step(t.goal_open)
    g.step(t.outline_open)
    assert g.phase is Phase.LABEL and g.allowed()[0] == vocab.encode("1:")[:1]
    for token in vocab.encode("1:") + vocab.encode(" a"):
        g.step(token)
    assert g.allowed()[1].count(t.outline_close) == 0 and tok.eos_token_id in g.allowed()[1]
    g.step(t.outline_close)
    assert g.allowed() == ([t.goal_close], [])  # max_paths=1: no second outline, and no text between outlines
    child = g.child("1")
    child.step(t.path_open)
    _, banned = child.allowed()
    assert t.path_close not in banned and t.parallel_open not in banned and t.think_close in banned


def test_random_model_never_breaks_the_structure(tok, one_thread):
    lm = MultiverseLM(build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, seed=4), tok, check_integrity=True)
    params = [SamplingParams(max_new_tokens=300, temperature=1.5, seed=s, max_depth=1) for s in range(40)]
    free = lm.generate([[5, 6, 7]] * 40, params)
    constrained = lm.generate([[5, 6, 7]] * 40, [SamplingParams(**{**p.__dict__, "structure": "constrained"}) for p in params])
    assert len(invalid(free, tok)) > 20
    assert invalid(constrained, tok) == []
    assert sum(o.stats.num_forks for o in constrained) >= 1 and not any(o.stats.fallbacks for o in constrained)
    assert lm.pool.num_used == 0


def test_shipped_model_off_task_and_held_out(one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    outs = lm.generate(OFF_TASK, [SamplingParams(max_new_tokens=400, temperature=1.5, seed=s, structure="constrained")
                                  for s in range(len(OFF_TASK))])
    assert invalid(outs, lm.tokenizer) == []
    prompts = [build_prompt(p, EvalConfig(), lm.tokenizer) for p in load_task("remainders", limit=4)]
    free = lm.generate(prompts, SamplingParams(max_new_tokens=1500, temperature=0))
    kept = lm.generate(prompts, SamplingParams(max_new_tokens=1500, temperature=0, structure="constrained"))
    assert [o.token_ids for o in free] == [o.token_ids for o in kept]  # valid greedy answers: the mask never binds


def test_a_budget_cut_block_is_finished_with_its_conclusion(one_thread):
    lm = MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)
    prompt = build_prompt(load_task("remainders", limit=1)[0], EvalConfig(), lm.tokenizer)
    free, kept = (lm.generate([prompt], SamplingParams(max_new_tokens=60, temperature=0, structure=s))[0]
                  for s in ("free", "constrained"))
    assert free.finish_reason == kept.finish_reason == "length" and kept.stats.num_forks == 1
    assert kept.raw_text == free.raw_text + "<Conclusion></Conclusion></Parallel>"  # forced, after the closed paths
    assert prefix_validity(kept.raw_text).valid and not prefix_validity(free.raw_text + "</Think>").valid
    assert lm.pool.num_used == 0


@pytest.mark.parametrize(("text", "valid"), [
    ("ab<Parallel>", True),
    ("x<Parallel><Goal>y<Outline>1", True),  # a label cut before its ":"
    ("x<Parallel><Goal><Outline>", True),
    ("<Think><Parallel><Goal><Outline>1: a</Outline></Goal><Path>1: b</Path>", True),
    ("x<Parallel><Goal><Outline>hello there", False),  # no label can follow
    ("</Path>x", False),
    ("<Parallel><Goal><Outline>1: a</Outline></Goal><Path>1: b</Path></Path>", False),
])
def test_prefix_validity_closes_only_what_a_cut_left_open(text, valid):
    assert prefix_validity(text).valid is valid


def test_closers_finish_a_block_cut_in_its_map_stage(tok):
    vocab = StructureVocab.from_tokenizer(tok)
    t = vocab.tags
    g = StructureGuard(vocab, StructureRules(), frozenset({tok.eos_token_id})).child("2")
    for token in [t.path_open] + vocab.encode("2: a ") + [t.parallel_open, t.goal_open, t.outline_open] + vocab.encode("2")[:1]:
        g.step(token)
    closed = tok.decode(vocab.encode("<Path>2: a ") + [t.parallel_open, t.goal_open, t.outline_open] + vocab.encode("2")[:1]
                        + g.closers() + [t.path_close])
    assert closed.endswith("<Outline>2.1:</Outline></Goal><Path>2.1:</Path><Conclusion></Conclusion></Parallel></Path>")
    assert prefix_validity("<Parallel><Goal><Outline>1: x</Outline><Outline>2: y</Outline></Goal><Path>1: q</Path>"
                           + closed + "<Conclusion></Conclusion></Parallel>").valid
