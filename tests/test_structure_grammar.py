"""The xgrammar grammar (engine/grammar.py) and the hand-written automaton (engine/structure_mask.py) are one
language: at every position of fuzzed token sequences, xgrammar's GrammarMatcher allows exactly the tokens the
automaton allows (so both accept and reject the same sequences, and end at the same places).

Sequences are in the shipped model's tokenizer (multiverse/assets): random walks of one branch (what an SGLang
call decodes, the grammar started from the automaton's state anywhere along the walk), and random plus mutated
valid whole traces, where the native side is the automaton per branch with the engine's forced tokens at fork
(`<Path> K:`) and merge (`<Conclusion>`), as SPEC §5 runs it."""
from __future__ import annotations

import copy
import random
import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig

from engine.driver import eos_ids  # noqa: E402
from engine.grammar import branch_grammar, trace_grammar  # noqa: E402
from engine.structure_mask import Phase, StructureGuard  # noqa: E402
from multiverse.attention.scanner import StructureRules  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.encode import encode_trace, fork_prefix_ids  # noqa: E402
from multiverse.tags import StructureVocab  # noqa: E402

xgr = pytest.importorskip("xgrammar")

RULES = [StructureRules(), StructureRules(max_paths=2), StructureRules(max_paths=3, max_depth=1),
         StructureRules(max_depth=2), StructureRules(parallel=False)]


@pytest.fixture(scope="module")
def shipped():
    tok = AutoTokenizer.from_pretrained(str(DEFAULT_MODEL))
    eos = eos_ids(tok, GenerationConfig.from_pretrained(str(DEFAULT_MODEL)))
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=sorted(eos))
    return tok, StructureVocab.from_tokenizer(tok), eos, xgr.GrammarCompiler(info)


def xgr_allowed(matcher, size: int) -> set[int]:
    mask = xgr.allocate_token_bitmask(1, size)
    matcher.fill_next_token_bitmask(mask)
    bits = (mask[0, :, None] >> torch.arange(32, dtype=torch.int32)) & 1  # [words, 32]
    return set(torch.nonzero(bits.flatten()[:size]).flatten().tolist())


def guard_allowed(guard: StructureGuard, size: int) -> set[int]:
    only, banned = guard.allowed()
    return set(only) if only is not None else set(range(size)) - set(banned)


class EngineWalk:
    """The native automaton over a whole trace: one guard per branch (a stack of them), the engine's forced
    tokens at a fork (each child's `<Path> K:`) and at the merge (`<Conclusion>`)."""

    def __init__(self, vocab: StructureVocab, rules: StructureRules, eos: frozenset[int], size: int) -> None:
        self.vocab, self.eos, self.size = vocab, eos, size
        self.frames = [{"guard": StructureGuard(vocab, rules, eos), "forced": [], "todo": []}]
        self.ended = False

    def allowed(self) -> set[int]:
        if self.ended:
            return set()
        f = self.frames[-1]
        if f["forced"]:
            return {f["forced"][0]}
        ids = guard_allowed(f["guard"], self.size)
        return ids - self.eos if f["guard"].label else ids  # in a trace a path ends with </Path> (EOS becomes it)

    def step(self, token: int) -> None:
        t, f = self.vocab.tags, self.frames[-1]
        guard = f["guard"]
        forks = token == t.goal_close and guard.phase is Phase.GOAL
        ends = token == t.path_close and guard.label and guard.phase is Phase.TEXT
        self.ended = token in self.eos and not guard.label
        if f["forced"]:
            f["forced"].pop(0)
        guard.step(token)
        if forks:
            f["todo"] = [guard._name(k) for k in range(1, guard.outlines + 1)]
            self._open(f)
        elif ends:
            self.frames.pop()
            parent = self.frames[-1]
            if parent["todo"]:
                self._open(parent)
            else:
                parent["forced"] = [t.conclusion_open]

    def _open(self, parent: dict) -> None:
        label = parent["todo"].pop(0)
        prefix = fork_prefix_ids(label, self.vocab)
        self.frames.append({"guard": parent["guard"].child(label), "forced": prefix, "todo": []})


def compare(walk, matcher, tokens: list[int], size: int) -> int:
    """Walk both along `tokens`, asserting equal allowed sets; returns how many tokens both accepted."""
    for i, token in enumerate(tokens):
        native, grammar = walk.allowed(), xgr_allowed(matcher, size)
        assert native == grammar, f"token {i}: only native {sorted(native - grammar)[:8]}, only grammar {sorted(grammar - native)[:8]}"
        accepted = matcher.accept_token(token)
        assert accepted == (token in native), f"token {i} ({token}): grammar accepted {accepted}"
        if not accepted:
            return i
        walk.step(token)
        if walk.ended:  # an EOS ended the root: nothing may follow
            return i + 1
    assert walk.allowed() == xgr_allowed(matcher, size)
    return len(tokens)


WORDS = ["the sum", " is 4", " check x", " so 12", " case one", " 1: 2:", " <Path"]


def block(rng: random.Random, rules: StructureRules, label: str = "") -> str:
    """A canonical block within `rules` (paths, depth), random text, nested with probability 0.6."""
    depth = label.count(".") + 1 if label else 0
    labels = [f"{label}.{i + 1}" if label else str(i + 1) for i in range(rng.randint(1, rules.max_paths))]
    goal = "".join(f"<Outline>{lab}:{rng.choice(WORDS)}</Outline>" for lab in labels)
    paths = ""
    for lab in labels:
        body = rng.choice(WORDS)
        if depth + 2 <= rules.max_depth and rng.random() < 0.6:
            body += block(rng, rules, lab) + rng.choice(WORDS)
        paths += f"<Path>{lab}:{body}</Path>"
    return f"<Parallel><Goal>{rng.choice(WORDS)}{goal}</Goal>{paths}<Conclusion>{rng.choice(WORDS)}</Conclusion></Parallel>"


def valid_trace(tok, vocab, rng: random.Random, rules: StructureRules) -> list[int]:
    parts = [rng.choice(["So ", "Plan: ", ""])]
    for _ in range(rng.randint(0, 2)):
        parts.append(block(rng, rules) if rules.parallel else "the sum is 4")
        parts.append(rng.choice([" then", " so 12", ""]))
    text = "".join(parts)
    if rng.random() < 0.3:
        text = f"<Think>{text}</Think> answer"
    return encode_trace(text, tok) + ([tok.eos_token_id] if rng.random() < 0.7 else [])


def mutate(ids: list[int], vocab, rng: random.Random, size: int) -> list[int]:
    ids = list(ids)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(ids) + 1)
        kind = rng.random()
        if kind < 0.35 and ids:
            del ids[min(i, len(ids) - 1)]
        elif kind < 0.7:
            ids.insert(i, rng.choice(vocab.tags.all()))
        elif kind < 0.85 and len(ids) > 1:
            j = rng.randrange(len(ids))
            ids[min(i, len(ids) - 1)], ids[j] = ids[j], ids[min(i, len(ids) - 1)]
        else:
            ids.insert(i, rng.randrange(size))
    return ids


@pytest.mark.parametrize("rules", RULES, ids=["free", "paths2", "paths3-depth1", "depth2", "sequential"])
def test_whole_traces_random_and_mutated(shipped, rules):
    tok, vocab, eos, compiler = shipped
    size = len(tok)
    rng = random.Random(str(rules))
    bounded = StructureRules(rules.parallel, rules.max_paths or 3, rules.max_depth or 2)  # the grammar unrolls these
    grammar = compiler.compile_grammar(trace_grammar(vocab, eos, bounded))
    kept = cut = 0
    for n in range(60):
        ids = valid_trace(tok, vocab, rng, bounded)
        if n % 2:
            ids = mutate(ids, vocab, rng, size)
        done = compare(EngineWalk(vocab, bounded, eos, size), xgr.GrammarMatcher(grammar), ids, size)
        kept += done == len(ids)
        cut += done < len(ids)
    assert kept >= 25 and cut >= 10  # both outcomes are exercised (valid traces all pass, most mutants fail)


@pytest.mark.parametrize("rules", RULES, ids=["free", "paths2", "paths3-depth1", "depth2", "sequential"])
@pytest.mark.parametrize("label", ["", "1", "2.1"])
def test_branch_walks_from_any_state(shipped, rules, label):
    """One branch's random walk (tags favoured, wrong tokens tried); at random points a grammar is built from
    the automaton's state, as the SGLang client does per call, and must agree from there on."""
    tok, vocab, eos, compiler = shipped
    size = len(tok)
    rng = random.Random(f"{rules}{label}")
    t = vocab.tags
    steps = rejected = 0
    for _ in range(12):
        guard = StructureGuard(vocab, rules, eos)
        if label:  # a path: forked from its parent, after its forced prefix
            guard = StructureGuard(vocab, rules, eos, label.rpartition(".")[0], label.count(".")).child(label)
            for token in fork_prefix_ids(label, vocab):
                guard.step(token)
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(branch_grammar(guard)))
        for _ in range(80):
            native = guard_allowed(guard, size)
            assert native == xgr_allowed(matcher, size), f"branch {label!r} after {steps} steps, phase {guard.phase}"
            if rng.random() < 0.15:  # a token the automaton masks: the grammar refuses it too
                wrong = rng.choice(sorted(set(range(size)) - native) or [None])
                if wrong is not None:
                    assert not matcher.accept_token(wrong)
                    rejected += 1
            tags, text = sorted(native & set(t.all()) - {t.path_close}), sorted(native - set(t.all()) - eos)
            ends = sorted(native & (eos | {t.path_close})) if rng.random() < 0.04 else []
            token = rng.choice(ends or (tags if tags and (rng.random() < 0.4 or not text) else text))
            assert matcher.accept_token(token)
            steps += 1
            if token in eos or (label and token == t.path_close):
                break
            guard.step(token)
            if guard.phase is Phase.WAIT:  # the paths run elsewhere; the merge forces <Conclusion>
                assert matcher.accept_token(t.conclusion_open)
                guard.step(t.conclusion_open)
            if rng.random() < 0.1:  # a new call: the grammar from the automaton's state
                matcher = xgr.GrammarMatcher(compiler.compile_grammar(branch_grammar(copy.deepcopy(guard))))
    assert steps > 100 and rejected > 5
