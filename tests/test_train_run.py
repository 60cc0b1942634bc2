"""End to end on CPU: a tiny random Qwen2 trained on Multiverse rows; reload; resume; shipped configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from multiverse.tags import TAGS, TagIds
from training.config import load_config
from training.run import build_trainer, prepare, train
from training.tiny_assets import synthetic_rows, write_jsonl, write_tiny_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_model(root / "model", hidden_size=48)  # no structure tags yet: the trainer adds them
    write_jsonl(synthetic_rows(12), root / "data.jsonl")
    return root


def config(assets: Path, out: Path, *extra: str):
    return load_config(
        None,
        [
            f"model.name_or_path={assets / 'model'}",
            "model.attn_implementation=sdpa",
            "model.dtype=float32",
            f"data.multiverse={assets / 'data.jsonl'}",
            "data.block_size=512",
            f"train.output_dir={out}",
            "train.learning_rate=0.003",
            "train.warmup_ratio=0.1",
            "train.logging_steps=1",
            "train.micro_batch_size=2",
            *extra,
        ],
    )


def losses(history: list[dict]) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_tiny_qwen2_learns_and_reloads(assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = config(assets, out, "train.max_steps=16", "train.save_steps=100", "data.packing=true", "data.mixing=shuffled")
    result = train(cfg, progress=False)
    curve = list(losses(result["log_history"]).values())
    assert len(curve) == 16
    assert sum(curve[-3:]) / 3 < 0.8 * sum(curve[:3]) / 3, curve
    logged = [h for h in result["log_history"] if "loss" in h]
    assert all(h["tokens_per_s"] > 0 and 0 <= h["attn_blocks_skipped"] < 1 for h in logged)
    assert max(h["attn_blocks_skipped"] for h in logged) > 0  # sibling paths / packed documents were skipped

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = TagIds.from_tokenizer(tok).all()
    assert all(tok.encode(t, add_special_tokens=False) == [i] for t, i in zip(TAGS, ids))  # single tokens
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    base = AutoModelForCausalLM.from_pretrained(assets / "model")
    assert base.get_input_embeddings().weight.shape[0] < len(tok)  # the tags were added by the trainer
    # the reloaded model is the trained one: same loss as the final in-memory weights on a fresh batch
    prepared = prepare(config(assets, tmp_path / "x", "model.name_or_path=" + str(out)), progress=False)
    batch = prepared.collator(prepared.rows[:2])
    batch.pop("mask_stats")
    with torch.no_grad():
        reloaded = model(**batch).loss.item()
    assert reloaded < curve[0]


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_resume_gives_the_same_loss_curve(assets: Path, tmp_path: Path) -> None:
    extra = ("train.max_steps=6", "train.save_steps=3", "train.grad_accum=2")
    full = train(config(assets, tmp_path / "full", *extra), progress=False)
    reference = losses(full["log_history"])

    cfg = config(assets, tmp_path / "split", *extra)
    first = build_trainer(cfg, prepare(cfg, progress=False))
    first.add_callback(StopAt(3))
    first.train()
    assert first.state.global_step == 3 and (tmp_path / "split" / "checkpoint-3").is_dir()
    resumed = train(config(assets, tmp_path / "split", *extra, "train.resume=auto"), progress=False)
    curve = {**losses(first.state.log_history), **losses(resumed["log_history"])}
    assert sorted(curve) == sorted(reference) == [1, 2, 3, 4, 5, 6]
    for step in reference:
        assert curve[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_autoregressive_baseline_trains_without_skipped_blocks(assets: Path, tmp_path: Path) -> None:
    cfg = config(assets, tmp_path / "ar", "train.max_steps=2", "train.mode=autoregressive", "data.mixing=shuffled")
    result = train(cfg, progress=False)
    logged = [h for h in result["log_history"] if "loss" in h]
    assert logged and all(h["attn_blocks_skipped"] == 0 for h in logged)  # plain causal, one document per row
    assert result["stats"]["by_kind"] == {"autoregressive": 24}  # twins + sequential traces


def test_cli_dry_run_and_clear_errors(assets: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "multiverse.cli", "train", "--config", str(CONFIGS / "tiny_cpu.yaml")]
    over = ["--model", str(assets / "model"), "--data", str(assets / "data.jsonl"), "--output-dir", str(tmp_path)]
    ok = subprocess.run([*cmd, *over, "--dry-run"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert '"event": "dry_run"' in ok.stdout and '"multiverse": 48' in ok.stdout
    bad = subprocess.run([*cmd, "--set", "data.mixing=random"], capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 2 and "data.mixing must be one of" in bad.stderr


# ---------------------------------------------------------------- shipped configs
@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "qwen2.5-32b_1x8.yaml", "qwen2.5-32b_2x8.yaml"])
def test_shipped_training_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    if "32b" in name:
        assert cfg.model.name_or_path == "Qwen/Qwen2.5-32B-Instruct" and cfg.train.bf16
        assert cfg.train.learning_rate == 1e-5 and cfg.data.mixing == "curriculum"
        gpus = 8 if "1x8" in name else 16
        assert gpus * cfg.train.micro_batch_size * cfg.train.grad_accum == 16  # the paper's global batch


@pytest.mark.parametrize("name, machines", [("fsdp_1x8.yaml", 1), ("fsdp_2x8.yaml", 2)])
def test_accelerate_fsdp_configs_use_real_options(name: str, machines: int) -> None:
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser, prepare_multi_gpu_env
    from accelerate.utils import DistributedType

    path = str(CONFIGS / "accelerate" / name)
    cluster = ClusterConfig.from_yaml_file(path)  # raises on unknown top-level keys
    assert cluster.distributed_type == DistributedType.FSDP and cluster.mixed_precision == "bf16"
    assert cluster.num_machines == machines and cluster.num_processes == 8 * machines
    parser = launch_command_parser()
    known = vars(parser.parse_args(["x.py"]))
    unknown = [k for k in cluster.fsdp_config if k not in known]
    assert not unknown, f"not accelerate launch options: {unknown}"
    argv = ["--config_file", path, "--main_process_ip", "10.0.0.1", "--main_process_port", "29500", "x.py"]
    args, _, _ = _validate_launch_command(parser.parse_args(argv))
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Qwen2DecoderLayer"
    from transformers.models.qwen2 import modeling_qwen2

    assert hasattr(modeling_qwen2, env["FSDP_TRANSFORMER_CLS_TO_WRAP"])


def test_slurm_script_launches_the_2x8_config() -> None:
    script = (REPO / "training" / "slurm" / "train_2x8.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
    assert "accelerate/fsdp_2x8.yaml" in script and "qwen2.5-32b_2x8.yaml" in script
    assert subprocess.run(["bash", "-n", str(REPO / "training" / "slurm" / "train_2x8.sbatch")]).returncode == 0


def test_pad_token_choice() -> None:
    from multiverse.tiny import build_tokenizer
    from training.config import ConfigError
    from training.model_setup import set_pad_token

    tok = build_tokenizer()
    tok.pad_token = None
    set_pad_token(tok, None)
    assert tok.pad_token == tok.eos_token  # no reserved pad token in this vocabulary
    tok.pad_token = None
    tok.add_tokens(["<|fim_pad|>"], special_tokens=True)
    set_pad_token(tok, None)
    assert tok.pad_token == "<|fim_pad|>"
    with pytest.raises(ConfigError, match="not a token"):
        set_pad_token(tok, "<|no_such_pad|>")
