"""Options of a TRL / HF Trainer user: evaluation rows, LoRA, TrainingArguments passthrough, reporting, token cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train_support import tiny_config, write_assets
from training import metrics_log, token_cache
from training.config import ConfigError, load_config
from training.data import load_examples
from training.model_setup import load_tokenizer
from training.rows import build_rows, hold_out
from training.run import prepare, train
from training.tiny_assets import synthetic_rows, write_jsonl
from training.trainer import training_arguments
from multiverse.tokens import add_structure_tokens


@pytest.fixture(scope="module")
def assets(tmp_path_factory, one_thread) -> Path:
    return write_assets(tmp_path_factory.mktemp("tiny"))


def _tokenizer(cfg):
    tok = load_tokenizer(cfg.model)
    add_structure_tokens(None, tok)
    return tok


# ---------------------------------------------------------------- evaluation
def test_eval_fraction_holds_out_whole_questions(assets: Path, tmp_path: Path) -> None:
    cfg = tiny_config(assets, tmp_path / "o")
    mv, ar = load_examples(cfg.data, baseline=False)
    kept_mv, kept_ar, held = hold_out(mv, ar, 0.25, seed=3)
    held_q = {ex.question for ex in held}
    assert len(held_q) == 3 and len(held) == 6  # 3 of 12 questions, each with its Multiverse and sequential row
    assert not held_q & {ex.question for ex in (*kept_mv, *kept_ar)}
    assert hold_out(mv, ar, 0.25, seed=3)[2] == held  # seeded


def test_eval_loss_is_logged_and_returned(assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(assets, out, "train.max_steps=2", "train.eval_steps=1", "data.eval_fraction=0.25")
    result = train(cfg, progress=False)
    evals = [h for h in result["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in evals] == [1, 2] and all(torch.isfinite(torch.tensor(h["eval_loss"])) for h in evals)
    assert result["eval"]["eval_loss"] == evals[-1]["eval_loss"]  # no second evaluation at the last step
    logged = metrics_log.read(out / metrics_log.FILE)
    assert [r["step"] for r in logged if "eval_loss" in r] == [1, 2]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]


def test_eval_split_from_a_local_file(assets: Path, tmp_path: Path) -> None:
    write_jsonl(synthetic_rows(3, seed=9), tmp_path / "eval.jsonl")
    cfg = tiny_config(assets, tmp_path / "o", f"data.eval_split={tmp_path / 'eval.jsonl'}", "data.mixing=shuffled")
    rows = build_rows(cfg, _tokenizer(cfg), progress=False)
    assert len(rows.eval) == 6 and len(rows.train) == 24  # 3 rows x (Multiverse + sequential); training untouched
    with pytest.raises(ConfigError, match="not both"):
        tiny_config(assets, tmp_path / "o", "data.eval_split=test", "data.eval_fraction=0.1")


# ---------------------------------------------------------------- LoRA
def test_lora_trains_adapters_and_the_tag_rows_only(assets: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    cfg = tiny_config(assets, out, "train.max_steps=3", "model.lora.r=4")
    prepared = prepare(cfg, progress=False)
    from training.lora import trainable_share

    assert 0 < trainable_share(prepared.loaded.model) < 0.2
    train(cfg, progress=False)
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)  # output_dir holds the merged full model
    base = AutoModelForCausalLM.from_pretrained(assets / "model")
    n = base.get_input_embeddings().weight.shape[0]
    q = lambda m: m.model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert not torch.equal(q(merged), q(base))  # LoRA merged into the projections
    emb = merged.get_input_embeddings().weight
    assert torch.equal(emb[:n], base.get_input_embeddings().weight)  # the old vocabulary stayed frozen
    assert emb.shape[0] == n + 12
    fresh_tok = _tokenizer(cfg)
    add_structure_tokens(base, fresh_tok)  # the tags' initial rows (mean of their sub-words)
    assert not torch.allclose(emb[n:], base.get_input_embeddings().weight[n:])  # ... were trained


# ---------------------------------------------------------------- TrainingArguments
def test_extra_args_pass_through_and_are_checked(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: {name_or_path: m}\ndata: {multiverse: d.jsonl}\n"
                 "train: {extra_args: {optim: adamw_torch, lr_scheduler_kwargs: {min_lr: 1.0e-6}}, "
                 "push_to_hub: true, hub_model_id: me/multiverse-tiny}\n")
    args = training_arguments(load_config(f), use_cpu=True)
    assert args.optim == "adamw_torch" and args.lr_scheduler_kwargs == {"min_lr": 1e-6}
    assert args.push_to_hub is True and args.hub_model_id == "me/multiverse-tiny"
    assert args.save_total_limit is None and args.prediction_loss_only  # rotation is ours; no eval logits
    with pytest.raises(ConfigError, match=r"optimm is not a TrainingArguments field \(did you mean optim"):
        training_arguments(load_config(f, ["train.extra_args={optimm: x}"]), use_cpu=True)
    with pytest.raises(ConfigError, match="extra_args.learning_rate is set by the config itself"):
        training_arguments(load_config(f, ["train.extra_args={learning_rate: 1}"]), use_cpu=True)


def test_report_to_names_what_is_missing(assets: Path, tmp_path: Path) -> None:
    from transformers.integrations import is_tensorboard_available

    if is_tensorboard_available():
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ConfigError, match=r"tensorboard is not installed \(pip install 'multiverse\[tensorboard\]'\)"):
        prepare(tiny_config(assets, tmp_path / "o", "train.report_to=tensorboard"), progress=False)
    with pytest.raises(ConfigError, match="unknown integration 'tensorbored'"):
        training_arguments(tiny_config(assets, tmp_path / "o", "train.report_to=tensorbored"), use_cpu=True)


# ---------------------------------------------------------------- token cache
def test_token_cache_is_reused_and_keyed_by_data_and_settings(assets: Path, tmp_path: Path) -> None:
    cfg = tiny_config(assets, tmp_path / "o", "data.mixing=curriculum", "data.packing=true")
    tok = _tokenizer(cfg)
    first = build_rows(cfg, tok, progress=False)
    second = build_rows(cfg, tok, progress=False)
    assert not first.cache_hit and second.cache_hit and first.cache == second.cache
    assert second.train == first.train and second.sha256 == first.sha256 and second.stats == first.stats
    assert all("doc_ids" in r for r in second.train)  # packed rows come back whole
    other = build_rows(tiny_config(assets, tmp_path / "o", "data.mixing=curriculum", "data.seed=1"), tok, False)
    assert other.cache != first.cache and not other.cache_hit
    Path(first.cache).write_bytes(b"not an npz")  # a damaged entry is ignored and rewritten
    again = build_rows(cfg, tok, progress=False)
    assert not again.cache_hit and again.train == first.train
    assert token_cache.load(Path(first.cache)) is not None
    off = build_rows(tiny_config(assets, tmp_path / "o", "data.mixing=curriculum", "data.packing=true",
                                 "data.token_cache=false"), tok, progress=False)
    assert off.cache is None and off.train == first.train and off.sha256 == first.sha256


def test_data_change_changes_the_cache_key(assets: Path, tmp_path: Path) -> None:
    write_jsonl(synthetic_rows(12, seed=4), tmp_path / "d.jsonl")
    a = tiny_config(assets, tmp_path / "o")
    b = tiny_config(assets, tmp_path / "o", f"data.multiverse={tmp_path / 'd.jsonl'}")
    tok = _tokenizer(a)
    assert build_rows(a, tok, False).cache != build_rows(b, tok, False).cache


def test_metrics_file_lines_are_json(assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(assets, out, "train.max_steps=2"), progress=False)
    rows = [json.loads(line) for line in (out / metrics_log.FILE).read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all({"learning_rate", "grad_norm", "tokens_per_s"} <= set(r) for r in rows if "loss" in r)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
