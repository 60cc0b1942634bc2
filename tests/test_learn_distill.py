"""Self-distillation (issue 23): the kept-rows filter (correct and structurally valid, shortest critical path per
question, provenance) judged by the real grader, and one real round end to end on the shipped tiny model (sampled
by the engine, kept, fine-tuned by the SFT trainer), repeatable without redoing work."""
from __future__ import annotations

import dataclasses
import json

import pytest

from multiverse.demo import DEFAULT_MODEL
from multiverse.demo.remainders import dependent, independent
from multiverse.evaluation.tasks import Problem
from multiverse.structure import sequential_twin
from training.config import Config, DataConfig, ModelConfig, PromptConfig, TrainConfig
from training.distill.config import DistillConfig, RoundsConfig
from training.distill.keep import kept_rows
from training.distill.run import distill
from training.judge import RewardConfig, judge
from training.rollouts import Question, Rollout, SamplingConfig, TaskConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _rollout(q: Question, sample: int, body: str, answer: str, critical: int, generated: int, finish: str = "stop") -> Rollout:
    text = f"<Think>\n{body}\n</Think>\n\nAnswer: {answer}"
    return Rollout(q, sample, 1000 + sample, [1, 2], [3] * generated, [-0.1] * generated, text, finish, generated,
                   critical, generated / critical, int("<Parallel>" in body), ())


def test_kept_rows_are_correct_valid_and_the_shortest_critical_path_per_question() -> None:
    block = independent([((83, 5),), ((58, 5),)])  # answer 6
    chain = dependent((13, 4), [(10, 4)])  # answer 3
    q1 = Question(Problem("1", block.question, "6", "word"), 0, True)
    q2 = Question(Problem("2", chain.question, "3", "word"), 1, False)
    broken = block.trace.replace("</Path><Path>2:", "<Path>2:", 1)  # an unclosed path
    group1 = [
        _rollout(q1, 0, sequential_twin(block.trace), "6", 300, 300),  # right, sequential
        _rollout(q1, 1, block.trace, "6", 120, 330),  # right, parallel
        _rollout(q1, 2, block.trace, "6", 120, 300),  # right, parallel, as short and fewer tokens: kept
        _rollout(q1, 3, block.trace, "7", 50, 300),  # wrong
        _rollout(q1, 4, block.trace, "6", 40, 300, finish="length"),  # cut off
        _rollout(q1, 5, broken, "6", 30, 300),  # broken structure
        _rollout(q1, 6, block.trace + "\n\nAnswer: 6", "6", 20, 300),  # two answer lines
    ]
    group2 = [_rollout(q2, k, chain.trace, "4", 90, 90) for k in range(3)]  # never right: no row
    verdicts = [[judge(r) for r in g] for g in (group1, group2)]
    assert [v.correct for v in verdicts[0]] == [True, True, True, False, True, True, True]
    assert [v.valid for v in verdicts[0]] == [True, True, True, True, False, False, False]
    rows = kept_rows([group1, group2], verdicts, 3, "runs/x", "\n\nAnswer: ")
    assert len(rows) == 1
    row = rows[0]
    assert row["question"] == block.question and row["deepseek_attempt"] == "6" and row["dependent"] is False
    assert row["deepseek_thinking_trajectory_parallel"] == f"<Think>\n{block.trace}\n</Think>"
    assert row["provenance"] == {"round": 3, "sample": 2, "seed": 1002, "critical_path": 120, "generated_tokens": 300,
                                 "parallelism": 2.5, "forks": 1, "candidates": 3, "model": "runs/x"}


def test_a_step_check_drops_answers_right_by_luck() -> None:
    block = independent([((83, 5),), ((58, 5),)])  # A = 3, B = 3: answer 6
    q = Question(Problem("1", block.question, "6", "word"), 0, True)
    lucky = block.trace.replace("83-5=78", "83-4=79", 1)  # a wrong divisor, the right total anyway
    group = [_rollout(q, 0, block.trace, "6", 120, 300), _rollout(q, 1, lucky, "6", 100, 300)]
    loose = [judge(r) for r in group]
    strict = [judge(r, RewardConfig(steps="remainders")) for r in group]
    assert [v.correct for v in loose] == [True, True] and [v.correct for v in strict] == [True, False]
    assert "subtracts 4" in strict[1].steps
    assert kept_rows([group], [loose], 1, "m", "\n\nAnswer: ")[0]["provenance"]["sample"] == 1  # the shorter, by luck
    assert kept_rows([group], [strict], 1, "m", "\n\nAnswer: ")[0]["provenance"]["sample"] == 0


def test_kept_rows_feed_the_sft_trainer(tmp_path) -> None:
    from transformers import AutoTokenizer

    from training.data import load_examples
    from training.encoding import encode_example

    block = independent([((83, 5),), ((58, 5),)])
    q = Question(Problem("1", block.question, "6", "word"), 0, True)
    r = _rollout(q, 0, block.trace, "6", 120, 300)
    path = tmp_path / "kept.jsonl"
    path.write_text(json.dumps(kept_rows([[r]], [[judge(r)]], 1, "m", "\n\nAnswer: ")[0]) + "\n")
    data = DataConfig(multiverse=str(path), mixing="multiverse_only", prompt=PromptConfig(multiverse_suffix=""))
    mv, _ = load_examples(data, False)
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    ids = encode_example(mv[0], tok, data)["input_ids"]
    assert tok.decode(ids).count("<Parallel>") == 1 and tok.decode(ids).rstrip().endswith("Answer: 6<|im_end|>")


def _config(tasks: str, out: str) -> DistillConfig:
    sft = Config(model=ModelConfig(dtype="float32", attn_implementation="sdpa"),
                 data=DataConfig(prompt=PromptConfig(multiverse_suffix=""), block_size=1024, token_cache=False),
                 train=TrainConfig(max_steps=2, micro_batch_size=2, learning_rate=1e-4, save_steps=1000, seed=0))
    return DistillConfig(model=ModelConfig(name_or_path=str(DEFAULT_MODEL)), data=TaskConfig(tasks=tasks),
                         sampling=SamplingConfig(samples=4, max_new_tokens=200),
                         distill=RoundsConfig(rounds=1, output_dir=out, seed=0), sft=sft).validate()


def test_a_round_samples_keeps_and_fine_tunes_and_a_rerun_redoes_nothing(tmp_path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    rows = [{"question": "Let A = 13 mod 4, B = (A+10) mod 4. Compute B.", "deepseek_attempt": "3", "dependent": True},
            {"question": "Let A = 17 mod 5, B = (A+10) mod 5. Compute B.", "deepseek_attempt": "2", "dependent": True}]
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "distill"
    cfg = _config(str(tasks), str(out))
    [summary] = distill(cfg)
    assert summary["completions"] == 8 and 1 <= summary["kept"] <= 2 and summary["correct_and_valid"] >= summary["kept"]
    kept = [json.loads(x) for x in (out / "round-1" / "kept.jsonl").read_text().splitlines()]
    for row in kept:
        p = row["provenance"]
        assert p["round"] == 1 and p["model"] == str(DEFAULT_MODEL) and 0 <= p["sample"] < 4 and p["critical_path"] > 0
    assert (out / "round-1" / "model" / "model.safetensors").is_file()
    stamp = (out / "round-1" / "model" / "model.safetensors").stat().st_mtime_ns
    assert distill(cfg) == [summary]  # done rounds are skipped
    assert (out / "round-1" / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_two_sampling_workers_draw_the_rollouts_one_engine_draws(tmp_path) -> None:
    """distill.workers: each process samples a contiguous share; the groups come back in question order, and the
    per-question seeds make them the rollouts one engine draws."""
    from training.distill.run import sample_all
    from training.rollouts import load_questions

    tasks = tmp_path / "tasks.jsonl"
    rows = [{"question": f"Let A = {a} mod 4, B = (A+10) mod 4. Compute B.", "deepseek_attempt": str((a % 4 + 10) % 4),
             "dependent": True} for a in (13, 17, 22, 9, 30)]
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(str(tasks), str(tmp_path / "distill"))
    cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, samples=2, max_new_tokens=120))
    questions = load_questions(cfg.data)
    one = sample_all(cfg, 1, str(DEFAULT_MODEL), questions)
    two = sample_all(dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, workers=2)), 1, str(DEFAULT_MODEL),
                     questions)
    key = lambda part: [[(r.question.index, r.sample, r.seed, r.text) for r in g] for g in part[0]]  # noqa: E731
    assert key(two) == key(one) and [g[0].question.index for g in two[0]] == [0, 1, 2, 3, 4]
    assert [[v.correct for v in vs] for vs in two[1]] == [[v.correct for v in vs] for vs in one[1]]


def test_fresh_questions_give_each_round_its_own_slice_of_the_task_file(tmp_path) -> None:
    """Round n samples rows [(n-1) x limit, n x limit), keeping their row numbers (seeds, provenance); a file too
    short for the last round is refused before any sampling. With replay, round n fine-tunes on rounds 1..n's rows."""
    from multiverse.config_io import ConfigError

    tasks = tmp_path / "tasks.jsonl"
    rows = [{"question": f"Let A = {a} mod {d}, B = (A+10) mod {d}. Compute B.", "deepseek_attempt": str((a % d + 10) % d),
             "dependent": True} for a, d in ((13, 4), (17, 5), (14, 4), (18, 5))]
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = _config(str(tasks), str(tmp_path / "distill"))
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, limit=2),
                              distill=dataclasses.replace(base.distill, rounds=2, fresh_questions=True, replay=True)).validate()
    assert [cfg.round_questions(n) for n in (1, 2)] == [(dataclasses.replace(cfg.data, limit=2), 0),
                                                        (dataclasses.replace(cfg.data, limit=4), 2)]
    summaries = distill(cfg)
    assert [s["questions"] for s in summaries] == [2, 2]
    for n, asked in ((1, rows[:2]), (2, rows[2:])):
        kept = [json.loads(x) for x in (tmp_path / "distill" / f"round-{n}" / "kept.jsonl").read_text().splitlines()]
        assert kept and {k["question"] for k in kept} <= {r["question"] for r in asked}
    folder = tmp_path / "distill"
    replay = (folder / "round-2" / "replay.jsonl").read_text()
    assert replay == (folder / "round-1" / "kept.jsonl").read_text() + (folder / "round-2" / "kept.jsonl").read_text()
    trained_on = [(folder / f"round-{n}" / "model" / "multiverse_train.yaml").read_text() for n in (1, 2)]
    assert "replay.jsonl" in trained_on[0] and str(folder / "round-2" / "replay.jsonl") in trained_on[1]
    with pytest.raises(ConfigError, match="has 4 rows; distill.fresh_questions needs .* = 6"):
        dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, rounds=3)).validate()


def test_a_bad_sft_section_is_refused_before_any_sampling(tmp_path) -> None:
    from multiverse.config_io import ConfigError

    cfg = _config(str(tmp_path / "t.jsonl"), str(tmp_path / "o"))
    bad = dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, data=dataclasses.replace(cfg.sft.data, truncation="x")))
    with pytest.raises(ConfigError, match="sft: data.truncation"):
        bad.validate()


def test_fork_bias_draws_forked_or_sequential_candidates_and_rl_refuses_it(tmp_path) -> None:
    """sampling.fork_bias reaches the engine: a large negative bias never forks where the shipped model always
    does; RL refuses any bias (its ratio needs the policy's own draws)."""
    from engine.api import MultiverseLM
    from multiverse.config_io import ConfigError
    from training.rl.config import RLConfig
    from training.rollouts import sample

    block = independent([((83, 5),), ((58, 5),)])
    q = Question(Problem("0", block.question, str(block.answer), "word"), 0, True)
    lm = MultiverseLM(str(DEFAULT_MODEL))
    forks = {}
    for bias in (-50.0, 3.0):
        [group] = sample(lm, [q], SamplingConfig(samples=3, max_new_tokens=300, fork_bias=bias), 0, "t")
        forks[bias] = [r.forks for r in group]
    lm.close()
    assert forks[-50.0] == [0, 0, 0] and all(f > 0 for f in forks[3.0])
    cfg = RLConfig(model=ModelConfig(name_or_path=str(DEFAULT_MODEL)), data=TaskConfig(tasks=str(tmp_path / "t.jsonl")),
                   sampling=SamplingConfig(fork_bias=1.0))
    (tmp_path / "t.jsonl").write_text(json.dumps({"question": "q", "deepseek_attempt": "1"}) + "\n")
    with pytest.raises(ConfigError, match="fork_bias must be 0 in RL"):
        cfg.validate()
