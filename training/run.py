"""One training run, end to end: config -> model, data, collator -> Trainer -> saved model.

    load model + tokenizer (+ structure tags) [+ LoRA] [+ chunked loss]  ->  rows (training.rows, cached)
    -> run fingerprint: checked against the checkpoint / output_dir, written to output_dir
    -> MultiverseTrainer(sequential order) -> complete checkpoints in output_dir
    -> final model, tokenizer, trainer_state.json, metrics.jsonl and the resolved config there
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from multiverse.tags import TagIds
from training import checkpoints, fingerprint
from training.collator import CollatorConfig, MultiverseCollator
from training.config import Config, ConfigError, to_dict
from training.encoding import EncodeStats
from training.loss import install_chunked_loss, resolve_loss
from training.metrics_log import JsonlMetrics
from training.model_setup import Loaded, load
from training.rows import Rows
from training.rows import build_rows as _build_rows


@dataclass(frozen=True)
class Prepared:
    loaded: Loaded
    rows: list[dict[str, list[int]]]  # what the Trainer reads, in order (samples or packed rows)
    stats: EncodeStats
    collator: MultiverseCollator
    data: Rows  # rows + evaluation rows + digests
    loss: str  # plain | chunked | liger
    world_size: int = 1


def build_rows(cfg: Config, tokenizer: Any, progress: bool = True) -> tuple[list[dict[str, list[int]]], EncodeStats]:
    """(training rows in order, statistics); see training.rows.build_rows for everything else."""
    rows = _build_rows(cfg, tokenizer, progress)
    return rows.train, rows.stats


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


def adapt_model(cfg: Config, loaded: Loaded, loss: str) -> Loaded:
    """LoRA (model.lora.r > 0) and the chunked loss, on the loaded model."""
    model = loaded.model
    if cfg.model.lora.r > 0:
        from training.lora import apply_lora

        model = apply_lora(model, cfg.model.lora, TagIds.from_tokenizer(loaded.tokenizer).all())
    if loss == "chunked":
        install_chunked_loss(model.get_base_model() if cfg.model.lora.r > 0 else model, cfg.train.loss_chunk_tokens)
    return Loaded(model, loaded.tokenizer, loaded.attn_implementation, loaded.added_tags, loaded.use_cache)


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    from accelerate import PartialState

    # NOTE: the process group must exist before from_pretrained, so that under FSDP with
    # cpu_ram_efficient_loading only rank 0 materialises the weights (the others load on the meta device).
    state = PartialState()
    from training.trainer import report_targets

    report_targets(cfg.train.report_to)  # a missing integration stops the run before anything is loaded
    loss = resolve_loss(cfg.train, torch.cuda.is_available())
    loaded = adapt_model(cfg, load(cfg.model), loss)
    with state.main_process_first():  # rank 0 downloads, tokenises and caches first; the others read its cache
        data = _build_rows(cfg, loaded.tokenizer, progress and state.is_main_process)
    return Prepared(loaded, data.train, data.stats, make_collator(cfg, loaded), data, loss, state.num_processes)


def run_fingerprint(cfg: Config, prepared: Prepared) -> dict[str, Any]:
    d = prepared.data
    return fingerprint.run_fingerprint(cfg, prepared.loaded.tokenizer, d.digests, d.sha256, prepared.world_size)


def resume_point(cfg: Config) -> str | None:
    """The checkpoint to resume: train.resume, or with "auto" the newest COMPLETE one in output_dir."""
    r = cfg.train.resume
    if r is None:
        return None
    if r == "auto":
        newest, skipped = checkpoints.newest_complete(cfg.train.output_dir)
        for folder, why in skipped.items():
            print(json.dumps({"event": "checkpoint_skipped", "checkpoint": folder, "why": why}))
        return str(newest) if newest else None
    if not Path(r).is_dir():
        raise FileNotFoundError(f"train.resume: checkpoint directory {r} does not exist")
    why = checkpoints.problem(r)
    if why is not None and cfg.train.resume_check:
        raise ConfigError(f"train.resume: {r} is not a complete checkpoint: {why} "
                          "(one saved before completion markers existed: set train.resume_check: false)")
    return r


def check_run(cfg: Config, current: dict[str, Any], checkpoint: str | None) -> None:
    """Refuse a checkpoint that belongs to another run (see training.fingerprint); with `resume: auto` and no
    checkpoint, also an output_dir that holds another run's output (it would be overwritten)."""
    if not cfg.train.resume_check:
        return
    if checkpoint is not None:
        fingerprint.check(f"train.resume: checkpoint {checkpoint}", fingerprint.read(checkpoint), current, "is one")
    elif cfg.train.resume == "auto":
        stored = fingerprint.read(cfg.train.output_dir)
        if stored is not None:
            fingerprint.check(f"train.output_dir {cfg.train.output_dir}", stored, current, "holds the output")


def build_trainer(cfg: Config, prepared: Prepared, run_fp: dict[str, Any] | None = None) -> Any:
    from training.trainer import MultiverseTrainer, training_arguments

    evals = prepared.data.eval
    args = training_arguments(cfg, use_cpu=not torch.cuda.is_available(), has_eval=bool(evals), loss=prepared.loss)
    return MultiverseTrainer(
        model=prepared.loaded.model,
        args=args,
        train_dataset=prepared.rows,
        eval_dataset=evals or None,
        data_collator=prepared.collator,
        processing_class=prepared.loaded.tokenizer,
        run_fingerprint=run_fp if run_fp is not None else run_fingerprint(cfg, prepared),
        keep_checkpoints=cfg.train.save_total_limit,
        use_cache=prepared.loaded.use_cache,
    )


def save_final(trainer: Any, cfg: Config, tokenizer: Any) -> None:
    """Resolved config, trainer state, then the full (unsharded) weights + tokenizer in output_dir (pushed last
    when train.push_to_hub). With LoRA: the adapter in output_dir/adapter and the merged model in output_dir."""
    out = cfg.train.output_dir
    if trainer.is_world_process_zero():
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "multiverse_train.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        trainer.save_state()  # trainer_state.json: log history, global step, best metrics
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None:
        plugin.set_state_dict_type("FULL_STATE_DICT")
    if cfg.model.lora.r > 0:
        from training.lora import save_lora

        merged = save_lora(trainer.model, out, cfg.model.lora.merge_on_save, trainer.is_world_process_zero())
        if merged is not None:
            trainer.model = trainer.model_wrapped = merged
    trainer.save_model(out)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)


def final_eval(trainer: Any) -> dict[str, float]:
    """The evaluation metrics at the last step (run now unless eval_steps already did at that step)."""
    step = trainer.state.global_step
    done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    return done[-1] if done else trainer.evaluate()


def train(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Run training; returns {"log_history", "stats", "output_dir", "global_step", "eval"}."""
    prepared = prepare(cfg, progress)
    run_fp = run_fingerprint(cfg, prepared)
    checkpoint = resume_point(cfg)
    check_run(cfg, run_fp, checkpoint)
    trainer = build_trainer(cfg, prepared, run_fp)
    trainer.add_callback(JsonlMetrics(cfg.train.output_dir, resumed=checkpoint is not None))
    if trainer.is_world_process_zero():
        fingerprint.write(cfg.train.output_dir, run_fp)
        d = prepared.data
        print(json.dumps({"event": "data", **asdict(prepared.stats), "rows": len(prepared.rows),
                          "eval_rows": len(d.eval), "loss": prepared.loss, "token_cache": d.cache,
                          "token_cache_hit": d.cache_hit}))
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = final_eval(trainer) if prepared.data.eval else {}
    save_final(trainer, cfg, prepared.loaded.tokenizer)
    return {
        "log_history": trainer.state.log_history,
        "stats": asdict(prepared.stats),
        "output_dir": cfg.train.output_dir,
        "global_step": trainer.state.global_step,
        "eval": metrics,
    }
