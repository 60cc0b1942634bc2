"""The RL stage (issue 23): the policy's teacher-forced log-probs of a rollout equal the engine's own, forced tokens
get no gradient, group advantages and reward parts on hand cases, and a resumed run is bit for bit the straight one.
Rollouts come from the shipped tiny default model through the real engine."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from engine.api import MultiverseLM
from multiverse.demo import DEFAULT_MODEL
from training.collator import CollatorConfig, MultiverseCollator
from training.config import ModelConfig, TrainConfig
from training.judge import RewardConfig, Verdict, acceleration, reward
from training.model_setup import set_pad_token
from training.rl.advantages import group_advantages
from training.rl.config import PolicyConfig, RLConfig
from training.rl.loss import policy_loss
from training.rl.policy import forward_logits, make_batch, token_logprobs
from training.rl.run import train_rl
from training.rollouts import SamplingConfig, TaskConfig, load_questions, sample

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [  # a block problem (the model forks) and a chain (it writes in order): rows of different lengths
    {"question": "Let A = 83 mod 5, B = 58 mod 5. Compute A+B.", "deepseek_attempt": "6", "dependent": False},
    {"question": "Let A = 13 mod 4, B = (A+10) mod 4. Compute B.", "deepseek_attempt": "3", "dependent": True},
]


def write_rows(tmp_path_factory, name: str, rows: list[dict]) -> str:
    path = tmp_path_factory.mktemp("rl") / name
    path.write_text("".join(json.dumps(q) + "\n" for q in rows))
    return str(path)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> str:
    return write_rows(tmp_path_factory, "tasks.jsonl", QUESTIONS)


CHAINS = [  # short answers (about 130 tokens); at temperature 1 some samples stop cleanly and some do not
    {"question": "Let A = 13 mod 4, B = (A+10) mod 4. Compute B.", "deepseek_attempt": "3", "dependent": True},
    {"question": "Let A = 7 mod 5, B = (A+10) mod 5. Compute B.", "deepseek_attempt": "2", "dependent": True},
]


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> str:
    return write_rows(tmp_path_factory, "chains.jsonl", CHAINS)


@pytest.fixture(scope="module")
def setup(tasks):
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    set_pad_token(tok, None)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL, dtype=torch.float32)
    lm = MultiverseLM(model, tok)
    questions = load_questions(TaskConfig(tasks=tasks))
    groups = sample(lm, questions, SamplingConfig(samples=2, max_new_tokens=700), 0, "test", 0)
    return tok, model, [r for g in groups for r in g]


def test_policy_logprobs_of_a_rollout_equal_the_engines(setup) -> None:
    tok, model, rollouts = setup
    assert any(r.forks > 0 for r in rollouts) and len({len(r.token_ids) for r in rollouts}) > 1
    batch = make_batch(rollouts, MultiverseCollator(tok, CollatorConfig(pad_id=tok.pad_token_id)))
    with torch.no_grad():
        logp, _ = token_logprobs(forward_logits(model, batch, "cpu"), batch)
    for i, r in enumerate(rollouts):
        start = len(r.prompt_ids) - 1  # logits at the last prompt position predict generated token 0
        sampled = [j for j, lp in enumerate(r.logprobs) if lp is not None]
        forced = [j for j, lp in enumerate(r.logprobs) if lp is None]
        assert sampled and (forced or r.forks == 0)
        got = logp[i, [start + j for j in sampled]]
        torch.testing.assert_close(got, torch.tensor([r.logprobs[j] for j in sampled]), atol=1e-4, rtol=0)
        assert batch.actions[i].sum() == len(sampled)  # prompt, forced tokens and padding are not actions
        assert not batch.actions[i, [start + j for j in forced]].any()
        torch.testing.assert_close(batch.old_logp[i, [start + j for j in sampled]], got, atol=1e-4, rtol=0)


def test_forced_tokens_get_zero_gradient(setup) -> None:
    tok, model, rollouts = setup
    batch = make_batch(rollouts, MultiverseCollator(tok, CollatorConfig(pad_id=tok.pad_token_id)))
    with torch.no_grad():
        logits = forward_logits(model, batch, "cpu")
    logits.requires_grad_(True)
    logp, _ = token_logprobs(logits, batch)
    ref = logp.detach() - 0.1  # a KL term as well: it must not reach forced tokens either
    loss, _ = policy_loss(logp, batch.old_logp, torch.tensor([1.0, -0.5, 2.0, -1.0]), batch.actions,
                          PolicyConfig(kl=0.5), ref)
    loss.backward()
    grad = logits.grad[:, :-1].abs().sum(-1)  # [B, L-1]: the position whose logits predict token j+1
    assert (grad[~batch.actions] == 0).all()
    assert (grad[batch.actions] > 0).all()
    forced = [(i, len(r.prompt_ids) - 1 + j) for i, r in enumerate(rollouts) for j, lp in enumerate(r.logprobs) if lp is None]
    assert forced and all(grad[i, p] == 0 for i, p in forced)


def test_group_advantages_on_a_hand_case() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [2.0, 0.0, 1.0, 1.0]])
    norm = group_advantages(rewards)
    # group 1: mean 0.5, population std 0.5; group 2: all equal, nothing to learn; group 3: mean 1, std sqrt(0.5)
    torch.testing.assert_close(norm[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert (norm[1] == 0).all()
    torch.testing.assert_close(norm[2], torch.tensor([2 ** 0.5, -(2 ** 0.5), 0.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(group_advantages(rewards, "centered")[2], torch.tensor([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="groups, samples"):
        group_advantages(rewards.view(-1))
    # all four right: the rewards differ only by the acceleration bonus (1.42 vs 1.40); normalizing scales these
    # hundredths up to the size of a right-vs-wrong contrast, centering keeps them hundredths (wide_rl_cpu.yaml)
    right = torch.tensor([[1.42, 1.40, 1.42, 1.40]])
    torch.testing.assert_close(group_advantages(right), torch.tensor([[1.0, -1.0, 1.0, -1.0]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(group_advantages(right, "centered"), torch.tensor([[0.01, -0.01, 0.01, -0.01]]))


def test_reward_parts_on_a_hand_case(setup) -> None:
    r = setup[2][0]
    fast = dataclasses.replace(r, generated_tokens=400, critical_path=100)  # 1 - 100/400 = 0.75
    cfg = RewardConfig(correct=1.0, acceleration=1.0, acceleration_clip=0.5, format=0.1)
    assert acceleration(fast) == 0.75
    right = reward(fast, Verdict(True, True, "", "6"), cfg)
    assert (right.correct, right.acceleration, right.format) == (1.0, 0.5, 0.1)  # clipped at 0.5
    assert reward(fast, Verdict(False, True, "", "7"), cfg).total == 0.1  # no speed bonus for a wrong answer
    slow = dataclasses.replace(r, generated_tokens=400, critical_path=400)
    assert reward(slow, Verdict(True, False, "finish length", "6"), cfg).total == 1.0


class StopAt(TrainerCallback):
    """Ends training after `step` (as a kill right after that step's checkpoint would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


def _config(tasks: str, out: str, resume: str | None = None) -> RLConfig:
    return RLConfig(
        model=ModelConfig(name_or_path=str(DEFAULT_MODEL), dtype="float32", attn_implementation="sdpa"),
        data=TaskConfig(tasks=tasks),
        sampling=SamplingConfig(samples=4, max_new_tokens=200),
        policy=PolicyConfig(kl=0.05),
        train=TrainConfig(output_dir=out, max_steps=4, micro_batch_size=1, learning_rate=1e-3, lr_scheduler="constant",
                          warmup_ratio=0.0, weight_decay=0.0, save_steps=2, save_total_limit=3, resume=resume, seed=0),
    ).validate()


def _lines(out) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    wall = ("time", "tokens_per_s", "rollout_s")  # wall times differ between runs
    return [{k: v for k, v in r.items() if k not in wall} for r in rows if "reward" in r]


def test_rl_resume_is_bit_exact(chains, tmp_path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_rl(_config(chains, str(straight)))
    train_rl(_config(chains, str(resumed)), callbacks=[StopAt(2)])
    assert (resumed / "checkpoint-2").is_dir() and not (resumed / "checkpoint-4").exists()
    result = train_rl(_config(chains, str(resumed), resume="auto"))
    assert result["global_step"] == 4
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    start = load_file(DEFAULT_MODEL / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it learned something: the check is not vacuous
    assert _lines(straight) == _lines(resumed) and [r["step"] for r in _lines(resumed)] == [1, 2, 3, 4]
    assert (resumed / "curves.png").stat().st_size > 10_000


def test_the_stages_configs_are_typed_and_checked_on_the_command_line(tasks) -> None:
    from test_cli_errors import cli, error_line

    rl = "training/configs/rl_tiny.yaml"
    proc = cli("train", "--stage", "rl", "--config", rl, "--set", "policy.advantage=best", "--data", tasks)
    assert proc.returncode == 2 and "policy.advantage must be one of normalized, centered" in error_line(proc, "train")
    proc = cli("train", "--stage", "rl", "--config", rl, "--set", "sampling.samples=many")
    assert proc.returncode == 2 and "sampling.samples = 'many'" in error_line(proc, "train")
    proc = cli("train", "--stage", "distill", "--config", "training/configs/distill_tiny.yaml", "--data", tasks,
               "--max-steps", "3", "--print-config")
    assert proc.returncode == 0 and f"tasks: {tasks}" in proc.stdout and "max_steps: 3" in proc.stdout
    proc = cli("train", "--stage", "rl", "--config", rl, "--autoregressive-baseline")
    assert proc.returncode == 2 and "--stage sft" in error_line(proc, "train")
