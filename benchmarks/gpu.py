"""One prepared check of the CUDA paths: the native engine, FlexAttention training, the chunked and Liger loss.

On a random-weight model shaped like Qwen2.5-0.5B (494M parameters, built from its config; nothing is
downloaded) and the tiny tokenizer with the structure tags:
  engine_exactness  SPEC §5: engine logprobs vs ONE teacher-forced forward (core mask and positions), fp32 and bf16
  flex_vs_dense     one training step, BlockMask + flex_attention vs dense mask + SDPA: loss and gradients
  loss              plain vs chunked cross-entropy (and Liger when importable): loss, gradients, time, memory
  engine_speed      tokens/s at batch 1/16/64: the engine (forks) vs parallel=False vs HF generate, same tokens
  train_speed       tokens/s and peak memory of a training step at 4K/16K/32K tokens, block vs dense mask
Each item is timed; one that raises is recorded with its error and the rest go on; past --budget-s the rest are
skipped. The JSON file is rewritten after every item, so a cut run leaves its partial results. Exit status 0
when every item ran and passed its tolerance. `--device cpu --quick` runs the same code on a tiny model (CI).

    python benchmarks/gpu.py [--device cuda] [--quick] [--out gpu_check.json] [--budget-s 420]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# Run as a script, this folder would shadow the `engine` package with benchmarks/engine.py: put the root first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from benchmarks import gpu_engine, gpu_train  # noqa: E402
from multiverse.tiny import build_tokenizer  # noqa: E402

# (fp32, bf16) tolerances: engine logprobs vs teacher forcing; flex vs dense loss and relative gradient difference
EXACT_TOL = {"float32": 1e-3, "bfloat16": 0.1}
FLEX_TOL = {"float32": (1e-4, 1e-3), "bfloat16": (5e-2, 5e-2)}
LOSS_TOL = (1e-2, 1e-2)  # chunked / Liger vs plain: loss, relative gradient difference
FULL = dict(batches=[1, 16, 64], repeats=2, blocks=2, exact_len=2048, lengths=[4096, 16384, 32768],
            loss=dict(tokens=16384, vocab=151936, hidden_size=896, chunk=4096))
QUICK = dict(batches=[1, 4], repeats=1, blocks=1, exact_len=256, lengths=[256],
             loss=dict(tokens=512, vocab=4096, hidden_size=64, chunk=128))


def model_config(tok: Any, quick: bool) -> Qwen2Config:
    special = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=True)
    if quick:
        return Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, **special)
    return Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=40960,
                       rope_theta=1_000_000.0, **special)  # Qwen2.5-0.5B's shape


def make_model(config: Qwen2Config, device: str, dtype: torch.dtype, attn: str = "sdpa") -> Any:
    config = copy.deepcopy(config)
    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


class Report:
    """The JSON file: every item's result (or error, or skip), rewritten after each item."""

    def __init__(self, path: Path, budget_s: float, head: dict[str, Any]) -> None:
        self.path, self.budget_s, self.began = path, budget_s, time.perf_counter()
        self.data: dict[str, Any] = {**head, "items": {}, "failed": [], "skipped": []}

    def run(self, name: str, fn: Any, passed: Any = None) -> None:
        if time.perf_counter() - self.began > self.budget_s:
            self.data["skipped"].append(name)
        else:
            start = time.perf_counter()
            try:
                result = fn()
                ok = passed(result) if passed else True
            except Exception as err:  # noqa: BLE001 - recorded, and the other items still run
                result, ok = {"error": f"{type(err).__name__}: {err}", "where": traceback.format_exc(limit=-3)}, False
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # what an item (or its error) left cached is not the next one's peak
            result["seconds"], result["ok"] = round(time.perf_counter() - start, 2), ok
            self.data["items"][name] = result
            if not ok:
                self.data["failed"].append(name)
            print(f"{name}: {'ok' if ok else 'FAILED'} {json.dumps(result)[:300]}", file=sys.stderr)
        self.data["elapsed_s"] = round(time.perf_counter() - self.began, 1)
        self.data["ok"] = not self.data["failed"] and not self.data["skipped"]
        self.path.write_text(json.dumps(self.data, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:1 or cpu")
    p.add_argument("--quick", action="store_true", help="a tiny model, short lengths, small batches (CI on CPU)")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON file written")
    p.add_argument("--budget-s", type=float, default=420, help="items not started by then are skipped")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch has no CUDA ({torch.__version__}); use --device cpu --quick")
    if args.device == "cpu":
        torch.set_num_threads(1)
    size = QUICK if args.quick else FULL
    tok = build_tokenizer()
    config = model_config(tok, args.quick)
    dev = args.device
    lowp = torch.bfloat16
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    n_params = sum(t.numel() for t in make_model(config, "meta", torch.float32).parameters())
    report = Report(args.out, args.budget_s, {
        "check": "gpu", "device": name, "torch": torch.__version__, "quick": args.quick,
        "model": {"shape": "Qwen2.5-0.5B" if not args.quick else "tiny", "parameters": n_params, "random_weights": True},
        "tolerances": {"exactness": EXACT_TOL, "flex_vs_dense": FLEX_TOL, "loss": LOSS_TOL},
    })
    for dtype in (torch.float32, lowp):
        key = str(dtype).removeprefix("torch.")
        report.run(f"engine_exactness_{key}", lambda d=dtype, k=key: gpu_engine.exactness(
            make_model(config, dev, d), tok, dev, EXACT_TOL[k], size["blocks"]), lambda r: r["ok"])
    for dtype in (torch.float32, lowp) if dev != "cpu" else (torch.float32,):  # CPU: each dtype compiles anew
        key = str(dtype).removeprefix("torch.")
        report.run(f"flex_vs_dense_{key}", lambda d=dtype: gpu_train.flex_vs_dense(
            lambda attn: make_model(config, dev, d, attn), tok, dev, size["exact_len"]),
            lambda r, k=key: r["loss_abs_diff"] <= FLEX_TOL[k][0] and (r["grad_rel_diff"] or 0.0) <= FLEX_TOL[k][1])
    report.run("loss", lambda: gpu_train.loss_check(dev, dtype=lowp if dev != "cpu" else torch.float32, **size["loss"]),
               lambda r: all(r[m]["loss_abs_diff_vs_plain"] <= LOSS_TOL[0] and r[m]["grad_rel_diff_vs_plain"] <= LOSS_TOL[1]
                             for m in ("chunked", "liger") if m in r))
    speed_dtype = lowp if dev != "cpu" else torch.float32
    speed_model = make_model(config, dev, speed_dtype)
    for batch in size["batches"]:
        report.run(f"engine_speed_batch_{batch}", lambda b=batch: gpu_engine.throughput(
            speed_model, tok, dev, b, size["repeats"], warm_up=b == size["batches"][0]))
    del speed_model
    for length in size["lengths"]:
        for kind in ("block", "dense"):
            report.run(f"train_speed_{kind}_{length}", lambda k=kind, n=length: gpu_train.train_step(
                lambda attn: make_model(config, dev, speed_dtype, attn), tok, dev, k, n),
                lambda r, k=kind: k == "dense" or "out_of_memory" not in r)  # block masks must fit 32K
    print(json.dumps({"check": "gpu", "out": str(args.out), "ok": report.data["ok"], "failed": report.data["failed"],
                      "skipped": report.data["skipped"], "elapsed_s": report.data["elapsed_s"]}))
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
