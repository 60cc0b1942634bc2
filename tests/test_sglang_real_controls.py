"""The structure grammar and the decoding controls on a REAL SGLang 0.5.23 server with the plugin (marker
`sglang`; skipped unless MV_SGLANG_VENV and MV_SGLANG_LAUNCH are set: see tests/sglang_support.py).

- The grammar (engine/grammar.py) as SGLang's `ebnf` (grammar backend xgrammar): off-task prompts at temperature
  1.5 decode only tokens the same grammar accepts locally, and every output is valid structure (a budget cut
  counts when it is the beginning of a valid one).
- The client with structure="constrained" at temperature 1.5 (a grammar per call from each branch's automaton):
  0 invalid structures.
- Parity with the native engine, greedy, task questions: the path cap writes the uncapped tokens; fork_bias and
  fork_threshold write native's tokens and fork acceptance; constrained greedy is native's.
Figures go to stdout (`-s`) and to $MV_SGLANG_CONTROLS_REPORT (when set).
"""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from transformers import GenerationConfig

sys.path.insert(0, str(Path(__file__).parent))
from sglang_support import needs_sglang, plugin_server, report_path, write_report  # noqa: E402

from engine.api import MultiverseLM  # noqa: E402
from engine.driver import eos_ids  # noqa: E402
from engine.grammar import trace_grammar  # noqa: E402
from engine.params import SamplingParams  # noqa: E402
from engine.structure_mask import Phase, StructureGuard  # noqa: E402
from multiverse.attention.scanner import StructureRules  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.demo.remainders import held_out_rows  # noqa: E402
from multiverse.evaluation.analysis import continuation_validity  # noqa: E402
from multiverse.evaluation.grading import special_tokens  # noqa: E402

xgr = pytest.importorskip("xgrammar")
pytestmark = needs_sglang(2400)
REPORT = report_path("MV_SGLANG_CONTROLS_REPORT")
OFF_TASK = ["Write a poem about the sea.", "asdf qwer zxcv", "What is the capital of France?", "<Path>", "1: 2: 3:",
            "Let A = 5. Compute nothing at all and stop.", "</Parallel></Goal>", "<Parallel><Goal>"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    with plugin_server(str(DEFAULT_MODEL), tmp_path_factory.mktemp("sglang") / "plugin.log") as server:
        yield server


@pytest.fixture(scope="module")
def native():
    return MultiverseLM(str(DEFAULT_MODEL))


def valid(tok, prompt_ids: list[int], ids: list[int]) -> bool:
    prompt = tok.decode(prompt_ids, skip_special_tokens=False)
    return continuation_validity(prompt, tok.decode(ids, skip_special_tokens=False), special_tokens(tok)).valid


def at_root_text(vocab, rules: StructureRules, eos: frozenset[int], ids: list[int]) -> bool:
    guard = StructureGuard(vocab, rules, eos)
    for token in ids:
        guard.step(token)
    return guard.phase is Phase.TEXT and guard.think == 0


def test_sglang_takes_the_grammar_and_samples_only_valid_structure(plugin, native):
    tok = native.tokenizer
    eos = eos_ids(tok, GenerationConfig.from_pretrained(str(DEFAULT_MODEL)))
    rules = StructureRules(max_paths=4, max_depth=2)
    grammar = trace_grammar(native.vocab, eos, rules)
    compiled = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=sorted(eos)))
    compiled = compiled.compile_grammar(grammar)
    # the whole-trace grammar starts at the root's plain text: prompts that leave the automaton there (a prompt
    # that opens a block, "<Parallel><Goal>", needs the grammar from that state: the client's per-call form)
    tasks = [tok.apply_chat_template([{"role": "user", "content": row["question"]}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"] for row in held_out_rows(4)]
    prompts = [ids for ids in [tok(p)["input_ids"] for p in OFF_TASK] * 3 + tasks * 2 if at_root_text(native.vocab, rules, eos, ids)]
    assert len(prompts) == 29  # 7 off-task prompts x 3 and 4 questions x 2 (the questions fork)
    sampling = [{"max_new_tokens": 400, "temperature": 1.5, "sampling_seed": i, "skip_special_tokens": False,
                 "ebnf": grammar} for i in range(len(prompts))]
    reply = httpx.post(plugin.url + "/generate", json={"input_ids": prompts, "sampling_params": sampling}, timeout=1200)
    assert reply.status_code == 200, reply.text[:500]
    outs = [item["output_ids"] for item in reply.json()]
    accepted = 0
    for ids in outs:
        matcher = xgr.GrammarMatcher(compiled)
        accepted += all(matcher.accept_token(t) for t in ids)
    good = sum(valid(tok, p, ids) for p, ids in zip(prompts, outs))
    forks = sum(ids.count(native.vocab.tags.goal_close) for ids in outs)
    write_report(REPORT, "ebnf", {"generations": len(outs), "accepted_by_local_grammar": accepted, "valid": good,
                                  "blocks": forks, "tokens": sum(map(len, outs))})
    assert accepted == good == len(outs) and forks >= 1


def test_client_constrained_at_temperature_1_5_is_valid(plugin, native):
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=plugin.url, call_tokens=64, timeout_s=300)
    try:
        params = [SamplingParams(max_new_tokens=150, temperature=1.5, seed=i, structure="constrained") for i in range(16)]
        outs = lm.generate(OFF_TASK * 2, params)
    finally:
        lm.close()
    tok = native.tokenizer
    invalid = [o.raw_text for o in outs if not valid(tok, o.prompt_token_ids, o.token_ids)]
    write_report(REPORT, "client_constrained", {"generations": len(outs), "invalid": len(invalid),
                                                "forks": sum(o.stats.num_forks for o in outs),
                                                "errors": sum(o.finish_reason == "error" for o in outs)})
    assert not invalid and all(o.finish_reason != "error" for o in outs), invalid[:2]


@pytest.mark.parametrize("control", [{"max_concurrent_paths": 1}, {"fork_bias": -14.0}, {"fork_threshold": 0.99998},
                                     {"structure": "constrained"}], ids=lambda c: next(iter(c)))
def test_controls_write_native_tokens(plugin, native, control):
    prompts = [[{"role": "user", "content": row["question"]}] for row in held_out_rows(4)]
    params = SamplingParams(temperature=0, max_new_tokens=800, **control)
    lm = MultiverseLM(str(DEFAULT_MODEL), backend="sglang", url=plugin.url, timeout_s=300)
    try:
        got = lm.generate(prompts, params)
    finally:
        lm.close()
    want = native.generate(prompts, SamplingParams(temperature=0, max_new_tokens=800) if "max_concurrent_paths" in control
                           else params)  # the cap: against the UNCAPPED native run
    same = sum(a.token_ids == b.token_ids for a, b in zip(want, got))
    write_report(REPORT, f"parity_{next(iter(control))}", {
        "questions": len(prompts), "identical": same, "forks": [b.stats.num_forks for b in got],
        "acceptance": [b.stats.fork_acceptance_rate for b in got], "native_acceptance": [a.stats.fork_acceptance_rate for a in want],
        "peak_paths": [b.stats.peak_paths for b in got], "native_peak_paths": [a.stats.peak_paths for a in want],
        "merges_exact": sum(b.stats.merges_exact for b in got), "merges": sum(b.stats.num_merges for b in got)})
    assert same == len(prompts)
    assert [b.stats.fork_acceptance_rate for b in got] == [a.stats.fork_acceptance_rate for a in want]
    assert all(b.stats.merges_exact == b.stats.num_merges for b in got)
