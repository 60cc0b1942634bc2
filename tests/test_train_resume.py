"""Resume safety: a run refuses another run's checkpoint, and a kill during a save never breaks `resume: auto`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.train_support import StopAt, losses, tiny_config, tiny_overrides, write_assets
from training import checkpoints, metrics_log
from training.config import ConfigError
from training.run import build_trainer, prepare, resume_point, train
from training.tiny_assets import synthetic_rows, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, one_thread) -> Path:
    return write_assets(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def finished(assets: Path, tmp_path_factory) -> Path:
    """A Multiverse run of 2 steps with checkpoint-2."""
    out = tmp_path_factory.mktemp("mv") / "run"
    train(tiny_config(assets, out, "train.max_steps=2", "train.save_steps=2"), progress=False)
    assert checkpoints.problem(out / "checkpoint-2") is None
    return out


@pytest.mark.parametrize("change, needle", [
    (("train.mode=autoregressive",), 'mode: "multiverse" in the stored run, "autoregressive" now'),
    (("train.learning_rate=0.001",), "train.learning_rate: 0.003 in the stored run, 0.001 now"),
    (("data.block_size=256",), "data.block_size: 512"),
    (("other_data",), "data.multiverse: {"),
])
def test_resume_refuses_a_checkpoint_of_another_run(assets: Path, finished: Path, tmp_path: Path,
                                                   change: tuple[str, ...], needle: str) -> None:
    extra = list(change)
    if change == ("other_data",):
        write_jsonl(synthetic_rows(12, seed=5), tmp_path / "data.jsonl")
        extra = [f"data.multiverse={tmp_path / 'data.jsonl'}"]
    cfg = tiny_config(assets, finished, "train.max_steps=4", "train.resume=auto", *extra)
    with pytest.raises(ConfigError) as err:
        train(cfg, progress=False)
    assert f"checkpoint {finished / 'checkpoint-2'} is one of another run" in str(err.value)
    assert needle in str(err.value), str(err.value)
    assert not (finished / "checkpoint-4").exists()  # refused before any step


def test_the_same_run_resumes_and_the_baseline_config_gets_its_own_folder(assets: Path, finished: Path) -> None:
    result = train(tiny_config(assets, finished, "train.max_steps=3", "train.resume=auto"), progress=False)
    assert result["global_step"] == 3
    assert [r["step"] for r in metrics_log.read(finished / metrics_log.FILE) if "loss" in r] == [1, 2, 3]
    cfg = tiny_config(assets, finished.parent / "x-{mode}", "train.mode=autoregressive")
    assert cfg.train.output_dir.endswith("x-autoregressive")


def test_baseline_refuses_an_output_dir_holding_the_multiverse_model(assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(assets, out, "train.max_steps=1", "train.save_steps=100"), progress=False)
    for folder in checkpoints.checkpoints(out):
        shutil.rmtree(folder)  # checkpoints cleaned up: only the final model is there
    with pytest.raises(ConfigError, match="holds the output of another run"):
        train(tiny_config(assets, out, "train.max_steps=1", "train.resume=auto", "train.mode=autoregressive"),
              progress=False)
    ok = train(tiny_config(assets, out, "train.max_steps=1", "train.resume=auto", "train.mode=autoregressive",
                           "train.resume_check=false"), progress=False)
    assert ok["global_step"] == 1


def test_incomplete_checkpoints_are_skipped_and_the_curve_is_unchanged(assets: Path, tmp_path: Path) -> None:
    extra = ("train.max_steps=6", "train.save_steps=2", "train.save_total_limit=null")
    reference = losses(train(tiny_config(assets, tmp_path / "full", *extra), progress=False)["log_history"])
    out = tmp_path / "split"
    cfg = tiny_config(assets, out, *extra)
    first = build_trainer(cfg, prepare(cfg, progress=False))
    first.add_callback(StopAt(4))
    first.add_callback(metrics_log.JsonlMetrics(str(out), resumed=False))
    first.train()
    assert [checkpoints.step_of(p) for p in checkpoints.checkpoints(out)] == [2, 4]
    # a kill during the save of checkpoint-4: trainer_state.json never written, marker never written
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    (out / "checkpoint-4" / checkpoints.MARKER).unlink()
    # and a checkpoint-6 whose marker survived but whose weights were cut short
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-6")
    weights = out / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cfg = tiny_config(assets, out, *extra, "train.resume=auto")
    assert resume_point(cfg) == str(out / "checkpoint-2")
    resumed = train(cfg, progress=False)
    curve = {**{s: v for s, v in losses(first.state.log_history).items() if s <= 2}, **losses(resumed["log_history"])}
    assert sorted(curve) == sorted(reference) == [1, 2, 3, 4, 5, 6]
    for step in reference:
        assert curve[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step
    steps = [r["step"] for r in metrics_log.read(out / metrics_log.FILE) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # lines 3-4 of the interrupted run were dropped, then logged again
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    saved = json.loads((out / "config.json").read_text())
    assert saved["use_cache"] is True  # training's use_cache=False is not saved
    assert json.loads((out / "checkpoint-6" / "config.json").read_text())["use_cache"] is True


@pytest.mark.slow
def test_a_real_kill_during_a_save_resumes_from_a_complete_checkpoint(assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    steps = ("train.max_steps=12", "train.save_steps=1")
    sets = tiny_overrides(assets, out, *steps)
    cmd = [sys.executable, "-m", "multiverse.cli", "train", *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    caught = None
    deadline = time.monotonic() + 240
    try:
        while caught is None and time.monotonic() < deadline and proc.poll() is None:
            for folder in checkpoints.checkpoints(out):
                if (checkpoints.step_of(folder) or 0) >= 3 and checkpoints.problem(folder) is not None:
                    os.killpg(proc.pid, signal.SIGKILL)  # mid-save: the folder exists, its marker does not
                    caught = folder
                    break
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert caught is not None, "the run ended before a save could be interrupted"
    newest, _ = checkpoints.newest_complete(out)
    assert newest is not None and checkpoints.problem(newest) is None
    result = train(tiny_config(assets, out, *steps, "train.resume=auto"), progress=False)
    assert result["global_step"] == 12
    assert [r["step"] for r in metrics_log.read(out / metrics_log.FILE) if "loss" in r] == list(range(1, 13))


def test_an_explicit_incomplete_checkpoint_is_an_error(assets: Path, finished: Path, tmp_path: Path) -> None:
    broken = tmp_path / "checkpoint-2"
    shutil.copytree(finished / "checkpoint-2", broken)
    (broken / checkpoints.MARKER).unlink()
    with pytest.raises(ConfigError, match="is not a complete checkpoint: no multiverse_complete.json"):
        resume_point(tiny_config(assets, finished, f"train.resume={broken}"))
    unchecked = tiny_config(assets, finished, f"train.resume={broken}", "train.resume_check=false")
    assert resume_point(unchecked) == str(broken)
