"""Cluster files: accelerate keeps every option of our FSDP configs, the SLURM script passes arguments intact,
and the shipped 32B configs give the baseline its own output_dir."""
from __future__ import annotations

import argparse
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from training.cli import add_arguments, overrides
from training.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
SLURM = REPO / "training" / "slurm"


def _launch_args(argv: list[str]):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    return _validate_launch_command(launch_command_parser().parse_args(argv))[0]


@pytest.mark.parametrize("name", ["fsdp_1x8.yaml", "fsdp_2x8.yaml"])
def test_every_top_level_option_of_the_accelerate_configs_reaches_the_launcher(name: str) -> None:
    """accelerate copies a config value only onto launch options whose default is None; the others are lost."""
    path = CONFIGS / "accelerate" / name
    tree = yaml.safe_load(path.read_text())
    args = _launch_args(["--config_file", str(path), "--main_process_ip", "10.0.0.1", "x.py"])
    skip = {"compute_environment", "distributed_type", "mixed_precision", "fsdp_config", "tpu_env"}
    lost = {k: (v, getattr(args, k)) for k, v in tree.items() if k not in skip and hasattr(args, k)
            and getattr(args, k) != v and not (v in (False, "no") and getattr(args, k) in (False, None))}
    assert not lost, f"config keys that accelerate launch drops (value in file, value used): {lost}"


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_keeps_argument_quoting_and_the_rendezvous(tmp_path: Path) -> None:
    """Run the sbatch script with stand-ins for srun/scontrol/accelerate that record what they receive."""
    record = tmp_path / "argv"
    _stub(tmp_path, "scontrol", "printf 'gpu-a\\ngpu-b\\n'\n")
    _stub(tmp_path, "srun", 'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    _stub(tmp_path, "accelerate", f'printf "%s\\0" "$@" > {record}\n')
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-[a-b]",
           "SLURM_NNODES": "2", "SLURM_NODEID": "1"}
    prompt = "data.prompt.system_prompt=You are a careful solver; think twice."
    cmd = ["bash", str(SLURM / "train_2x8.sbatch"), "--autoregressive-baseline", "--set", prompt]
    subprocess.run(cmd, env=env, cwd=REPO, check=True, timeout=30)
    argv = record.read_bytes().decode().split("\0")[:-1]
    assert argv[0] == "launch"
    split = argv.index("-m")
    tail = argv[split:]
    assert tail[:3] == ["-m", "multiverse.cli", "train"]
    assert tail[-3:] == ["--autoregressive-baseline", "--set", prompt]  # one argument, spaces and ; intact
    args = _launch_args([*argv[1:split], "x.py"])
    assert args.rdzv_backend == "c10d" and args.machine_rank == 1 and args.num_machines == 2
    assert args.num_processes == 16 and args.main_process_ip == "gpu-a"
    # the script's own arguments build the config the job trains
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(tail[3:])
    cfg = load_config(ns.config, overrides(ns))
    assert cfg.train.mode == "autoregressive" and cfg.train.output_dir == "runs/qwen2.5-32b-autoregressive"
    assert cfg.data.prompt.system_prompt == "You are a careful solver; think twice."


def test_submit_wrapper_creates_the_log_folder_before_sbatch(tmp_path: Path) -> None:
    record = tmp_path / "argv"
    _stub(tmp_path, "sbatch", f'[ -d logs ] || exit 3\nprintf "%s\\0" "$@" > {record}\n')
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    work = tmp_path / "repo"
    work.mkdir()
    subprocess.run(["bash", str(SLURM / "submit.sh"), "--set", "a b"], env=env, cwd=work, check=True, timeout=30)
    argv = record.read_bytes().decode().split("\0")[:-1]
    assert argv[0] == "--output=logs/%x-%j.out" and argv[1].endswith("train_2x8.sbatch")
    assert argv[2:] == ["--set", "a b"] and (work / "logs").is_dir()
    script = (SLURM / "train_2x8.sbatch").read_text()
    assert "#SBATCH --output=%x-%j.out" in script  # a direct sbatch needs no folder either


@pytest.mark.parametrize("name", ["qwen2.5-32b_1x8.yaml", "qwen2.5-32b_2x8.yaml"])
def test_32b_configs_separate_the_baseline(name: str) -> None:
    mv = load_config(CONFIGS / name)
    ar = load_config(CONFIGS / name, ["train.mode=autoregressive"])
    assert mv.train.resume == "auto" and mv.train.output_dir != ar.train.output_dir
    assert ar.train.output_dir.endswith("autoregressive") and mv.train.output_dir.endswith("multiverse")
