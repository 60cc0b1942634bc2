"""RLTrainer: the project's MultiverseTrainer (checkpoints, fingerprint, resume, logging) with a policy-gradient
step. Each Trainer sample is one question; every micro-batch:

    questions -> rollouts from the engine (Backend seam; seeds from run seed, global step, question, sample)
              -> judge (eval grader, structure) -> rewards -> group advantages
              -> ONE teacher-forced forward with the core's mask and positions -> clipped policy loss [+ KL]

The engine decodes the very parameters being trained (the native backend wraps the unwrapped model), so every
rollout comes from the current policy; the ratio is taken against the engine's own log-probs. Per logging step
the mean of each metric over its micro-batches is logged (one metrics.jsonl line per step with logging_steps 1).
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Sequence

import torch

from training import rollouts as rollouts_mod
from training.judge import judge, reward
from training.rl.advantages import group_advantages
from training.rl.config import RLConfig
from training.rl.loss import policy_loss
from training.rl.policy import forward_logits, make_batch, token_logprobs
from training.rollouts import Question, Rollout
from training.trainer import MultiverseTrainer


class RLTrainer(MultiverseTrainer):
    def __init__(self, *args: Any, rl_config: RLConfig, questions: Sequence[Question], policy_collator: Any,
                 ref_model: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rl, self.questions, self.policy_collator, self.ref_model = rl_config, list(questions), policy_collator, ref_model
        self._engine: Any = None
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def engine(self) -> Any:
        """The rollout backend (engine/backend.py), built once around the unwrapped model."""
        if self._engine is None:
            from engine.api import MultiverseLM

            model = self.accelerator.unwrap_model(self.model)
            self._engine = MultiverseLM(model, self.processing_class, **self.rl.policy.engine)
            model.train()
        return self._engine

    def rollouts(self, indices: list[int]) -> list[list[Rollout]]:
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            qs = [self.questions[i] for i in indices]
            return rollouts_mod.sample(self.engine(), qs, self.rl.sampling, self.args.seed, "rl", self.state.global_step)
        finally:
            model.train(was_training)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kw: Any) -> Any:
        start = time.perf_counter()
        groups = self.rollouts(inputs["index"].tolist())
        flat = [r for g in groups for r in g]
        verdicts = [judge(r, self.rl.reward) for r in flat]
        parts = [reward(r, v, self.rl.reward) for r, v in zip(flat, verdicts)]
        k = self.rl.sampling.samples
        totals = torch.tensor([p.total for p in parts], dtype=torch.float32).view(len(groups), k)
        advantages = group_advantages(totals, self.rl.policy.advantage).view(-1)
        rollout_s = time.perf_counter() - start
        batch = make_batch(flat, self.policy_collator)
        if model.training:
            self._window += batch.mask_stats.to(torch.float64)  # tokens/s and skipped attention blocks, as in SFT
        logits = forward_logits(model, batch, self.args.device)
        logp, entropy = token_logprobs(logits, batch)
        ref_logp = self._ref_logprobs(batch) if self.ref_model is not None else None
        loss, stats = policy_loss(logp, batch.old_logp.to(logp.device), advantages, batch.actions.to(logp.device),
                                  self.rl.policy, ref_logp)
        n = batch.actions.sum().clamp(min=1)
        self._record(flat, verdicts, parts, stats, float(entropy.sum() / n), rollout_s)
        return (loss, logits) if return_outputs else loss

    def _ref_logprobs(self, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            return token_logprobs(forward_logits(self.ref_model, batch, self.args.device), batch)[0]

    def _record(self, flat: list[Rollout], verdicts: list[Any], parts: list[Any], stats: dict[str, float],
                entropy: float, rollout_s: float) -> None:
        m = self._metrics
        for r, v, p in zip(flat, verdicts, parts):
            m["reward"].append(p.total)
            m["reward_correct"].append(p.correct)
            m["reward_acceleration"].append(p.acceleration)
            m["reward_format"].append(p.format)
            m["accuracy"].append(float(v.correct))
            m["valid"].append(float(v.valid))
            m["forked"].append(float(r.forks > 0))
            if r.question.forkable:
                m["forked_forkable"].append(float(r.forks > 0))
            m["parallelism"].append(r.parallelism)
            m["critical_path"].append(float(r.critical_path))
            m["generated_tokens"].append(float(r.generated_tokens))
        m["entropy"].append(entropy)
        m["rollout_s"].append(rollout_s)
        for key, value in stats.items():
            m[key].append(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:
            logs.update({k: round(sum(v) / len(v), 6) for k, v in self._metrics.items() if v})
            self._metrics.clear()
        super().log(logs, start_time)
