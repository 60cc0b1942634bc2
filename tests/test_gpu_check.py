"""benchmarks/gpu.py, the prepared GPU check, runs its whole code path small on CPU (`--device cpu --quick`):
every item runs and passes, and the JSON file holds the figures the README asks a GPU run for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_quick_on_cpu_and_writes_one_json_file(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is True
    report = json.loads(out.read_text())
    items = report["items"]
    assert report["ok"] and not report["failed"] and not report["skipped"] and report["device"] == "cpu"
    for dtype in ("float32", "bfloat16"):
        exact = items[f"engine_exactness_{dtype}"]
        assert exact["forks"] > 0 and exact["sampled_positions"] > 100 and exact["kv_pages_left"] == 0
        assert exact["max_abs_logprob_diff"] <= report["tolerances"]["exactness"][dtype]
    assert items["engine_exactness_float32"]["max_abs_logprob_diff"] < 1e-4  # SPEC §5 in fp32
    assert items["flex_vs_dense_float32"]["loss_abs_diff"] < 1e-5  # the same loss through both masks
    assert items["loss"]["chunked"]["grad_rel_diff_vs_plain"] < 1e-5
    for batch in (1, 4):
        speed = items[f"engine_speed_batch_{batch}"]
        assert speed["tokens_written"] == 337 * batch and speed["degree_of_parallelism"] > 1
        assert all(speed[f"{k}_tokens_per_s"] > 0 for k in ("engine", "sequential", "hf_generate"))
    assert {"train_speed_block_256", "train_speed_dense_256"} <= set(items)
