"""`multiverse generate` end to end: a tiny model follows a trace, the live view draws, the JSON is complete."""
from __future__ import annotations

import json

import pytest

from multiverse.cli import main

TRACE = (
    "Let's think.<Parallel><Goal>Two checks.<Outline>1: the sum</Outline><Outline>2: the product</Outline></Goal>"
    "<Path>1: 3 + 4 = 7</Path><Path>2: 3 * 4 = 12</Path><Conclusion>So 12.</Conclusion></Parallel> Done."
)


def test_generate_with_live_view_and_json(tmp_path, capsys):
    script = tmp_path / "trace.txt"
    script.write_text(TRACE)
    assert main(["generate", "--tiny", "--script", str(script), "--json", "Consider"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["finish_reason"] == "stop"
    assert result["stats"]["num_forks"] == 1 and result["stats"]["num_merges"] == 1
    assert [b["label"] for b in result["tree"]] == ["", "1", "2"]
    assert result["text"].startswith("Let's think.<Parallel>") and "<Path>2: 3 * 4 = 12</Path>" in result["text"]
    assert "path 2" in captured.err and "degree of parallelism" in captured.err


def test_generate_plain_and_sequential(capsys):
    assert main(["generate", "--tiny", "--no-live", "--sequential", "--max-new-tokens", "6", "--chat", "hi"]) == 0
    out = capsys.readouterr().out
    assert "finish reason" in out and "length" in out


def test_missing_model_path_is_named(capsys):
    assert main(["generate", "--model", "/nonexistent/model", "hi"]) == 2
    assert "multiverse generate: error: --model /nonexistent/model: no such directory" in capsys.readouterr().err


def test_model_from_a_local_path(tmp_path, tok, capsys):
    from engine.api import MultiverseLM
    from engine.params import SamplingParams
    from multiverse.tiny import build_model

    model = build_model(tok, seed=4)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = MultiverseLM(str(tmp_path)).generate("The answer is", SamplingParams(max_new_tokens=6, temperature=0))[0]
    direct = MultiverseLM(model, tok).generate("The answer is", SamplingParams(max_new_tokens=6, temperature=0))[0]
    assert loaded.token_ids == direct.token_ids
    assert main(["generate", "--model", str(tmp_path), "--no-live", "--max-new-tokens", "3", "hi"]) == 0
    assert "finish reason" in capsys.readouterr().out


def test_the_chat_template_is_used_whenever_the_model_has_one(capsys):
    """`generate --model PATH` (no --chat) formats the prompt as the default model was trained: a chat turn."""
    from multiverse.demo import DEFAULT_MODEL

    texts = {}
    for fmt in ([], ["--raw"]):
        argv = ["generate", "--model", str(DEFAULT_MODEL), *fmt, "--sequential", "--json", "--no-live",
                "--max-new-tokens", "12", "--threads", "1", "Let A = 83 mod 5, B = 58 mod 5, C = 50 mod 5, D = 56 mod 5. Compute A+B+C+D."]
        assert main(argv) == 0
        texts[bool(fmt)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"]
    assert texts[False].startswith("<Think>\n<Parallel><Goal>")  # what the model writes after its chat prompt
    assert not texts[True].startswith("<Think>")  # --raw bypasses the template: the model is off its training data
