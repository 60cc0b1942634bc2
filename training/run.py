"""One training run, end to end: config -> model, data, collator -> Trainer -> saved model.

    load model + tokenizer (+ structure tokens)  ->  rows -> examples -> mixing order -> ids/labels
    -> (packing) -> MultiverseTrainer(sequential order) -> checkpoints in output_dir -> final model there
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from training.collator import CollatorConfig, MultiverseCollator
from training.config import Config, ConfigError, to_dict
from training.data import load_examples
from training.encoding import EncodeStats, encode_all
from training.mixing import mix
from training.model_setup import Loaded, load
from training.packing import pack_samples


@dataclass(frozen=True)
class Prepared:
    loaded: Loaded
    rows: list[dict[str, list[int]]]  # what the Trainer reads, in order (samples or packed rows)
    stats: EncodeStats
    collator: MultiverseCollator


def build_rows(cfg: Config, tokenizer: Any, progress: bool = True) -> tuple[list[dict[str, list[int]]], EncodeStats]:
    baseline = cfg.train.mode == "autoregressive"
    mv, ar = load_examples(cfg.data, baseline)
    order = mix(mv, ar, cfg.data.mixing, cfg.data.seed)
    samples, stats = encode_all(order, tokenizer, cfg.data, progress)
    if not samples:
        raise ValueError("no training sample left after tokenisation (all dropped); check block_size and the data")
    rows = pack_samples(samples, cfg.data.block_size) if cfg.data.packing else samples
    return rows, stats


def mask_device(flex: bool, cfg: Config) -> str | None:
    """The GPU of this process when BlockMasks are used (built there by the collator), else None."""
    if not flex or not torch.cuda.is_available():
        return None
    if cfg.train.dataloader_workers:
        raise ConfigError("flex_attention block masks are built on the GPU in the main process; "
                          "set train.dataloader_workers: 0")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def make_collator(cfg: Config, loaded: Loaded) -> MultiverseCollator:
    flex = loaded.attn_implementation == "flex_attention"
    return MultiverseCollator(
        loaded.tokenizer,
        CollatorConfig(
            pad_id=loaded.tokenizer.pad_token_id,
            mask_kind="block" if flex else "dense",
            block_size=cfg.train.mask_block,
            parallel=cfg.train.mode == "multiverse",
            pad_to_multiple=cfg.train.mask_block if flex else 1,
            device=mask_device(flex, cfg),
        ),
    )


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    from accelerate import PartialState

    # NOTE: the process group must exist before from_pretrained, so that under FSDP with
    # cpu_ram_efficient_loading only rank 0 materialises the weights (the others load on the meta device).
    state = PartialState()
    loaded = load(cfg.model)
    with state.main_process_first():  # rank 0 downloads / caches the data set first
        rows, stats = build_rows(cfg, loaded.tokenizer, progress and state.is_main_process)
    return Prepared(loaded, rows, stats, make_collator(cfg, loaded))


def resume_point(cfg: Config) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    r = cfg.train.resume
    if r is None:
        return None
    if r == "auto":
        out = Path(cfg.train.output_dir)
        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(r).is_dir():
        raise FileNotFoundError(f"train.resume: checkpoint directory {r} does not exist")
    return r


def build_trainer(cfg: Config, prepared: Prepared) -> Any:
    from training.trainer import MultiverseTrainer, training_arguments

    args = training_arguments(cfg, use_cpu=not torch.cuda.is_available())
    return MultiverseTrainer(
        model=prepared.loaded.model,
        args=args,
        train_dataset=prepared.rows,
        data_collator=prepared.collator,
        processing_class=prepared.loaded.tokenizer,
    )


def save_final(trainer: Any, cfg: Config, tokenizer: Any) -> None:
    """Full (unsharded) weights + tokenizer + the resolved config in output_dir."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None:
        plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(cfg.train.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(cfg.train.output_dir)
        Path(cfg.train.output_dir, "multiverse_train.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def train(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Run training; returns {"log_history", "stats", "output_dir", "global_step"}."""
    prepared = prepare(cfg, progress)
    trainer = build_trainer(cfg, prepared)
    if trainer.is_world_process_zero():
        print(json.dumps({"event": "data", **asdict(prepared.stats), "rows": len(prepared.rows)}))
    trainer.train(resume_from_checkpoint=resume_point(cfg))
    save_final(trainer, cfg, prepared.loaded.tokenizer)
    return {
        "log_history": trainer.state.log_history,
        "stats": asdict(prepared.stats),
        "output_dir": cfg.train.output_dir,
        "global_step": trainer.state.global_step,
    }
