"""One RL run, end to end (`multiverse train --stage rl --config FILE.yaml`):

    model + tokenizer (SFT loader) [+ frozen starting copy for the KL] -> questions (data.tasks)
    -> run fingerprint: checked against the checkpoint / output_dir, written there (as SFT)
    -> RLTrainer: a Trainer sample per question, steps of rollouts + one teacher-forced forward each
    -> complete checkpoints, metrics.jsonl (one line per step), curves.png, the final model in train.output_dir
Resume (`train.resume: auto` or a checkpoint) continues bit for bit: weights, optimizer, scheduler and RNG come
from the checkpoint, and every rollout's seed is a function of (train.seed, step, question, sample).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from training import fingerprint
from training.metrics_log import JsonlMetrics
from training.model_setup import load
from training.rl.config import RLConfig
from training.rl.curves import CurvesCallback, plot_curves
from training.rollouts import load_questions
from training.run import check_run, make_collator, resume_point, save_final


def rl_fingerprint(cfg: RLConfig, tokenizer: Any) -> dict[str, Any]:
    """What makes a checkpoint this run's: model, tokenizer, questions file, every RL and optimiser setting."""
    out: dict[str, Any] = {"mode": "rl", **fingerprint.model_digest(cfg.model.name_or_path)}
    out["model.dtype"] = cfg.model.dtype
    out["tokenizer.sha256"] = fingerprint.tokenizer_digest(tokenizer)
    out["data.tasks_sha256"] = fingerprint.file_sha256(Path(cfg.data.tasks))
    for section in ("data", "sampling", "reward", "policy"):
        out |= fingerprint._flat(f"{section}.", dataclasses.asdict(getattr(cfg, section)))
    train = dataclasses.asdict(cfg.train)
    out |= {f"train.{k}": train[k] for k in fingerprint.TRAIN_KEYS if k != "mode"}
    out.pop("data.tasks")  # named by its digest
    return json.loads(json.dumps(out))


def index_batch(features: list[dict[str, int]]) -> dict[str, torch.Tensor]:
    return {"index": torch.tensor([f["index"] for f in features], dtype=torch.long)}


def frozen_copy(cfg: RLConfig) -> Any:
    model = load(cfg.model).model.eval()
    model.requires_grad_(False)
    return model


def build_trainer(cfg: RLConfig, run_fp: dict[str, Any] | None = None) -> Any:
    from training.rl.trainer import RLTrainer
    from training.trainer import training_arguments

    loaded = load(cfg.model)
    questions = load_questions(cfg.data)
    args = training_arguments(cfg, use_cpu=not torch.cuda.is_available())  # type: ignore[arg-type]
    ref = frozen_copy(cfg) if cfg.policy.kl > 0 or cfg.policy.track_kl else None
    if ref is not None and torch.cuda.is_available():
        ref.to(args.device)
    return RLTrainer(
        model=loaded.model, args=args, train_dataset=[{"index": q.index} for q in questions],
        data_collator=index_batch, processing_class=loaded.tokenizer,
        run_fingerprint=run_fp if run_fp is not None else rl_fingerprint(cfg, loaded.tokenizer),
        keep_checkpoints=cfg.train.save_total_limit, use_cache=loaded.use_cache,
        rl_config=cfg, questions=questions, policy_collator=make_collator(cfg, loaded), ref_model=ref,  # type: ignore[arg-type]
    )


def train_rl(cfg: RLConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Run the RL stage (extra Trainer `callbacks` too); returns {"output_dir", "global_step", "log_history", "curves"}."""
    trainer = build_trainer(cfg)
    if trainer.accelerator.num_processes > 1:  # each rank's native engine would decode a shard of the weights
        from multiverse.config_io import ConfigError

        raise ConfigError("the RL stage runs in one process (the native engine decodes the full weights it trains); "
                          "multi-GPU rollouts are the SGLang design in training/README.md, not built yet")
    for callback in callbacks:
        trainer.add_callback(callback)
    run_fp = trainer.run_fingerprint
    checkpoint = resume_point(cfg)  # type: ignore[arg-type]
    check_run(cfg, run_fp, checkpoint)  # type: ignore[arg-type]
    out = cfg.train.output_dir
    trainer.add_callback(JsonlMetrics(out, resumed=checkpoint is not None))
    trainer.add_callback(CurvesCallback(out))
    if trainer.is_world_process_zero():
        fingerprint.write(out, run_fp)
        print(json.dumps({"event": "rl", "questions": len(trainer.questions), "samples": cfg.sampling.samples,
                          "resume": checkpoint}))
    trainer.train(resume_from_checkpoint=checkpoint)
    save_final(trainer, cfg, trainer.processing_class)  # type: ignore[arg-type]
    png = plot_curves(out)
    return {"output_dir": out, "global_step": trainer.state.global_step, "log_history": trainer.state.log_history,
            "curves": str(png) if png else None}
