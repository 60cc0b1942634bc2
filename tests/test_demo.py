"""The shipped pair (issue 13): the default model forks on its task and answers it, its twin answers it in order;
both share one architecture and one tokenizer, and `reproduce --install-only` puts a trained pair in their place."""
from __future__ import annotations

import filecmp
import json
import os

import pytest

from multiverse.demo import BASELINE_MODEL, DEFAULT_MODEL
from multiverse.demo.remainders import held_out_rows

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTIONS = 8


def _answers(outs) -> list[str]:
    return [o.text.rsplit("Answer: ", 1)[-1].split("<")[0].strip() for o in outs]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return held_out_rows(QUESTIONS)


def test_the_pair_shares_architecture_and_tokenizer() -> None:
    configs = [json.loads((d / "config.json").read_text()) for d in (DEFAULT_MODEL, BASELINE_MODEL)]
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        assert configs[0][key] == configs[1][key], key
    assert configs[0]["model_type"] == "qwen2"
    assert filecmp.cmp(DEFAULT_MODEL / "tokenizer.json", BASELINE_MODEL / "tokenizer.json", shallow=False)
    assert not filecmp.cmp(DEFAULT_MODEL / "model.safetensors", BASELINE_MODEL / "model.safetensors", shallow=False)


@pytest.mark.slow
def test_default_model_forks_one_path_per_name_and_answers(rows) -> None:
    from multiverse import MultiverseLM, SamplingParams

    outs = MultiverseLM(str(DEFAULT_MODEL)).generate(
        [[{"role": "user", "content": r["question"]}] for r in rows], SamplingParams(temperature=0, max_new_tokens=900))
    for o, row in zip(outs, rows):
        assert o.finish_reason == "stop"
        if not row["dependent"]:  # a block of one path per name (its nested blocks besides)
            names = row["question"].rsplit("Compute ", 1)[1].count("+") + 1
            assert o.stats.num_forks >= 1 and [b.finish_reason for b in o.tree].count("path_end") >= names
            assert o.stats.degree_of_parallelism > 1.8
    right = sum(a == r["deepseek_attempt"] for a, r in zip(_answers(outs), rows))
    assert right >= 7  # measured: 8 of these 8 (0.98 on the 600 held-out rows)


@pytest.mark.slow
def test_the_twin_answers_in_order(rows) -> None:
    from multiverse import MultiverseLM, SamplingParams

    outs = MultiverseLM(str(BASELINE_MODEL)).generate(
        [[{"role": "user", "content": r["question"]}] for r in rows[:4]], SamplingParams(temperature=0, max_new_tokens=900))
    assert all(o.stats.num_forks == 0 and "<Parallel>" not in o.text for o in outs)
    assert sum(a == r["deepseek_attempt"] for a, r in zip(_answers(outs), rows)) >= 3  # measured: 4 of 4 (0.96 on the 600 held-out rows)


def test_install_only_copies_a_trained_pair(tmp_path, monkeypatch) -> None:
    import multiverse.demo as demo
    from multiverse.demo.reproduce import main

    out = tmp_path / "repro"
    for name, src in (("multiverse", DEFAULT_MODEL), ("autoregressive", BASELINE_MODEL)):
        run = out / name
        (run / "checkpoint-10").mkdir(parents=True)  # checkpoints stay behind
        for f in os.listdir(src):
            (run / f).write_bytes((src / f).read_bytes())
    monkeypatch.setattr(demo, "DEFAULT_MODEL", tmp_path / "assets" / "tiny-multiverse")
    monkeypatch.setattr(demo, "BASELINE_MODEL", tmp_path / "assets" / "tiny-autoregressive")
    main(["--out", str(out), "--install-only"])
    for name, src in (("tiny-multiverse", DEFAULT_MODEL), ("tiny-autoregressive", BASELINE_MODEL)):
        dest = tmp_path / "assets" / name
        assert sorted(os.listdir(dest)) == sorted(os.listdir(src))
        assert filecmp.cmp(dest / "model.safetensors", src / "model.safetensors", shallow=False)
    (out / "autoregressive" / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match="no model.safetensors"):
        main(["--out", str(out), "--install-only"])
