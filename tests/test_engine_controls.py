"""Decoding controls (engine/controls.py): checked fields, the fork gate and bias, entropy telemetry.

The gate is driven through the real engine on a tiny random model; a logits processor sets the distribution
at the first position so p(<Parallel>) is known exactly (the gate reads the distribution after processors).
"""
from __future__ import annotations

import math

import pytest
import torch

from engine import controls
from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.tags import TagIds
from multiverse.tiny import build_model


@pytest.fixture(scope="module")
def lm(tok, one_thread):
    return MultiverseLM(build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, seed=4), tok)


def first_position(p_parallel: float, other: int, tags: TagIds):
    """At the first generated token: <Parallel> with probability p, `other` with 1 - p; afterwards EOS only."""

    def processor(visible, logits):
        out = torch.full_like(logits, float("-inf"))
        if tags.parallel_open in visible or other in visible[-1:]:
            out[EOS] = 0.0
        else:
            out[tags.parallel_open] = math.log(p_parallel)
            out[other] = math.log(1 - p_parallel)
        return out

    return processor


EOS = 0  # set by the fixture below


@pytest.fixture(autouse=True)
def _eos(tok):
    global EOS
    EOS = tok.eos_token_id


@pytest.mark.parametrize(
    ("field", "value", "kind", "words"),
    [
        ("fork_threshold", 1.5, ValueError, "in \\[0, 1\\]"),
        ("fork_threshold", "0.9", TypeError, "a number"),
        ("fork_bias", float("inf"), ValueError, "finite"),
        ("max_concurrent_paths", 0, ValueError, ">= 1"),
        ("max_concurrent_paths", 2.0, TypeError, "an integer"),
        ("path_rule", "sorted", ValueError, "one of"),
        ("path_factor", 1.0, ValueError, "needs path_rule"),
        ("structure", "strict", ValueError, "'free', 'constrained'"),
        ("merge", "recompute", ValueError, "'reuse', 'refresh'"),
    ],
)
def test_bad_controls_name_field_and_value(field, value, kind, words):
    with pytest.raises(kind, match=rf"SamplingParams\.{field} .*{words}.*got "):
        SamplingParams(**{field: value})


def test_factor_rule_needs_its_factor_and_assignments_parse():
    with pytest.raises(ValueError, match="path_factor must be given"):
        SamplingParams(path_rule="factor")
    p = SamplingParams(path_rule="factor", path_factor=1, fork_threshold=1)
    assert p.path_factor == 1.0 and isinstance(p.fork_threshold, float)
    assert controls.parse_assignment("fork_threshold=0.7") == ("fork_threshold", 0.7)
    assert controls.parse_assignment("max-concurrent-paths=2") == ("max_concurrent_paths", 2)
    with pytest.raises(ValueError, match="NAME one of"):
        controls.parse_assignment("temperature=1")
    assert controls.recorded(SamplingParams()) == controls.DEFAULTS


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_fork_threshold_keeps_or_masks_parallel(lm, tok, temperature):
    tags, other = TagIds.from_tokenizer(tok), 45
    outs = []
    for tau in (None, 0.5, 0.7):
        kept = []
        for seed in range(6):
            params = SamplingParams(max_new_tokens=3, temperature=temperature, seed=seed, fork_threshold=tau,
                                    logits_processors=[first_position(0.6, other, tags)])
            out = lm.generate([[5, 6, 7]], params)[0]
            kept.append((out.token_ids[0], out.stats.fork_proposals, out.stats.fork_accepted))
        outs.append(kept)
    free, low, high = outs
    assert low == free  # 0.6 >= 0.5: the gate changes nothing
    assert all(t != tags.parallel_open for t, _, _ in high)  # 0.6 < 0.7: <Parallel> never stays
    vetoed = [(p, a) for (t, p, a), (t0, _, _) in zip(high, free) if t0 == tags.parallel_open]
    assert vetoed and all(p == 1 and a == 0 for p, a in vetoed)  # each veto is a counted, rejected proposal
    if temperature == 0:
        assert all(t == tags.parallel_open for t, _, _ in free)


def test_fork_bias_and_acceptance_rate(lm, tok):
    tags, other = TagIds.from_tokenizer(tok), 45
    proc = first_position(0.4, other, tags)  # <Parallel> just below `other`
    plain = lm.generate([[5, 6, 7]], SamplingParams(max_new_tokens=3, temperature=0, logits_processors=[proc]))[0]
    biased = lm.generate([[5, 6, 7]], SamplingParams(max_new_tokens=3, temperature=0, fork_bias=1.0, logits_processors=[proc]))[0]
    assert plain.token_ids[0] == other and plain.stats.fork_acceptance_rate is None
    assert biased.token_ids[0] == tags.parallel_open
    assert biased.stats.fork_acceptance_rate == 1.0 and biased.stats.as_dict()["fork_acceptance_rate"] == 1.0
    # the bias raises p(<Parallel>) to 0.4e / (0.4e + 0.6) = 0.64 before the threshold reads it
    gated = lm.generate([[5, 6, 7]], SamplingParams(max_new_tokens=3, temperature=0, fork_bias=1.0, fork_threshold=0.65,
                                                    logits_processors=[proc]))[0]
    assert gated.token_ids[0] == other and gated.stats.fork_acceptance_rate == 0.0


def test_branches_carry_their_entropy(lm):
    out = lm.generate([[5, 6, 7]], SamplingParams(max_new_tokens=12, temperature=1.0, seed=3, ignore_eos=True))[0]
    root = out.tree[0]
    assert 0 < root.mean_entropy < root.max_entropy <= math.log(lm.model.config.vocab_size) + 1e-5
    one = lm.generate([[5, 6, 7]], SamplingParams(max_new_tokens=1, temperature=0))[0].tree[0]
    with torch.no_grad():  # the model's own distribution at the first generated position
        p = torch.softmax(lm.model(torch.tensor([[5, 6, 7]])).logits[0, -1].float(), -1)
    assert one.mean_entropy == one.max_entropy == pytest.approx(float(-(p * p.log()).sum()), rel=1e-4)
