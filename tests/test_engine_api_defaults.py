"""The Python API behaves as the commands do: the default model, a string prompt as a user turn (raw=True as it
is), `multiverse generate`'s sampling defaults, and the commands' one-thread rule for tiny models."""
from __future__ import annotations

import argparse

import pytest
import torch

from engine import cli as generate_cli
from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.demo import BASELINE_MODEL, DEFAULT_MODEL
from multiverse.tiny import build_model

QUESTION = "Let A = 83 mod 5, B = 58 mod 5, C = 50 mod 5, D = 56 mod 5. Compute A+B+C+D."


@pytest.fixture()
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def default_lm():
    return MultiverseLM()


def test_no_argument_is_the_default_model(default_lm):
    assert default_lm.tokenizer.name_or_path == str(DEFAULT_MODEL)
    assert default_lm.model.config.num_hidden_layers == 4  # the shipped 0.7M-parameter Qwen2


def test_a_string_is_a_user_turn_unless_raw(default_lm):
    tok = default_lm.tokenizer
    turn = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    assert default_lm.encode_prompt(QUESTION) == tok(turn, add_special_tokens=False)["input_ids"]
    assert default_lm.encode_prompt(QUESTION, raw=True) == tok(QUESTION)["input_ids"]
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="prompt: empty"):
            default_lm.generate(blank)


def test_generate_stream_and_submit_template_alike(default_lm):
    (out,) = default_lm.generate(QUESTION)
    assert out.text.splitlines()[-1] == "Answer: 7" and out.finish_reason == "stop"
    assert out.prompt_token_ids == default_lm.encode_prompt([{"role": "user", "content": QUESTION}])
    streamed = [e for e in default_lm.stream([QUESTION]) if type(e).__name__ == "Finished"][0].output
    events = []
    request = default_lm.submit(QUESTION, sink=events.append)
    while default_lm.has_work():
        default_lm.step()
    assert streamed.token_ids == request.output.token_ids == out.token_ids
    (raw,) = default_lm.generate(QUESTION, raw=True)
    assert raw.prompt_token_ids == default_lm.tokenizer(QUESTION)["input_ids"] != out.prompt_token_ids


def test_sampling_defaults_are_the_generate_commands():
    parser = argparse.ArgumentParser()
    generate_cli.add_arguments(parser)
    flags = parser.parse_args(["q"])
    params = SamplingParams()
    assert (params.max_new_tokens, params.max_critical_tokens) == (flags.max_new_tokens, flags.max_critical_tokens) == (512, None)
    assert (params.temperature, params.top_k, params.top_p) == (flags.temperature, flags.top_k, flags.top_p)
    assert params.greedy


def test_threads_follow_the_commands_rule_unless_given(tok, keep_threads):
    torch.set_num_threads(2)
    MultiverseLM(build_model(tok), tok)  # a tiny model: one thread, as `multiverse generate` uses
    assert torch.get_num_threads() == 1
    MultiverseLM(str(BASELINE_MODEL), threads=2)
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads"):
        MultiverseLM(build_model(tok), tok, threads=0)
