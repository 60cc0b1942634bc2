"""One training step (mask + forward + backward) with Multiverse Attention: our masks vs the reference's.

CPU: a small Qwen2 (hidden 128, 2 layers) at 2K and 8K tokens of a real Multiverse trace, with
  dense_bool      our collator's batch: core layout -> bool [1, 1, L, L], SDPA
  reference_f32   the reference trainer's recipe: a Python loop over tokens that blanks sibling path spans
                  pairwise in a causal bool matrix, then a float32 additive mask (0 / -inf), SDPA
CUDA (when present): a bigger model in bf16 at 8K and 32K, FlexAttention BlockMask vs dense bool + SDPA.

Every (method, length) runs in a fresh subprocess. CPU peak memory is the rise of the resident high-water
mark (benchmarks/peak_memory.py: reset at the region's start on Linux) over the resident size just before the mask is built;
CUDA peak memory is torch.cuda.max_memory_allocated above the allocation before the step. tokens/s counts
the L tokens over (mask build + forward + backward), the best of REPEATS steps. Readable lines go to stderr; ONE JSON line to stdout.

    python benchmarks/train_step.py [--lengths 2048 8192] [--cuda-lengths 8192 32768]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.peak_memory import PeakMemory  # noqa: E402

from multiverse.data import EXAMPLES_DIR

REPO = Path(__file__).resolve().parents[1]
TRACE = EXAMPLES_DIR / "13.xml"  # a reference trace shipped in multiverse/data
REPEATS = 3


def trace_ids(length: int, tokenizer: Any) -> list[int]:
    """`length` ids of Multiverse traces: the shipped reference trace when present, else synthetic rows."""
    from multiverse.encode import encode_trace
    from training.tiny_assets import synthetic_rows

    if TRACE.is_file():
        texts = [TRACE.read_text()]
    else:
        texts = [r["deepseek_thinking_trajectory_parallel"] for r in synthetic_rows(400)]
    ids: list[int] = []
    while len(ids) < length:
        for text in texts:
            ids += encode_trace(text, tokenizer)
    return ids[:length]


def reference_float_mask(ids: list[int], tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference trainer's approach (no code copied): Python token loops, pairwise span blanking, float32."""
    from multiverse.tags import TagIds

    t = TagIds.from_tokenizer(tokenizer)
    L = len(ids)
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))
    frames: list[Any] = []  # "block" lists of spans, or the int start of an open path
    for i, tok in enumerate(ids):
        if tok == t.parallel_open:
            frames.append([])
        elif tok == t.path_open:
            frames.append(i)
        elif tok == t.path_close and frames and isinstance(frames[-1], int):
            start = frames.pop()
            if frames and isinstance(frames[-1], list):
                frames[-1].append((start, i))
        elif tok == t.parallel_close and frames and isinstance(frames[-1], list):
            spans = frames.pop()
            for a in range(len(spans)):
                for b in range(a + 1, len(spans)):
                    qa = torch.arange(spans[a][0], spans[a][1] + 1)
                    qb = torch.arange(spans[b][0], spans[b][1] + 1)
                    ga, gb = torch.meshgrid(qa, qb, indexing="ij")
                    allowed[ga, gb] = False
                    allowed[gb, ga] = False
    mask = torch.full_like(allowed, 0.0, dtype=torch.float32).masked_fill(~allowed, float("-inf"))
    positions = _reference_positions(ids, t)
    return mask[None, None], positions[None]


def _reference_positions(ids: list[int], t: Any) -> torch.Tensor:
    """Suffix shifts at every <Path> and <Conclusion>, in a Python loop (as the reference does)."""
    pos = torch.arange(len(ids))
    stack: list[dict[str, int]] = []
    for i, tok in enumerate(ids):
        if tok == t.parallel_open:
            stack.append({"goal_end": -1, "longest": 0})
        elif tok == t.goal_close and stack:
            stack[-1]["goal_end"] = int(pos[i])
        elif tok == t.path_open and stack and stack[-1]["goal_end"] >= 0:
            pos[i:] += stack[-1]["goal_end"] + 1 - pos[i]
        elif tok == t.path_close and stack:
            stack[-1]["longest"] = max(stack[-1]["longest"], int(pos[i]) - stack[-1]["goal_end"])
        elif tok == t.conclusion_open and stack:
            pos[i:] += stack[-1]["goal_end"] + stack[-1]["longest"] + 1 - pos[i]
        elif tok == t.parallel_close and stack:
            stack.pop()
    return pos


def _model(tokenizer: Any, cuda: bool, attn: str) -> Any:
    from multiverse.tiny import build_model

    if cuda:
        m = build_model(tokenizer, hidden_size=1024, num_layers=4, num_heads=16, num_kv_heads=4, attn_implementation=attn)
        return m.to("cuda", torch.bfloat16).train()
    return build_model(tokenizer, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, attn_implementation=attn).train()


def _batch(method: str, ids: list[int], tokenizer: Any) -> dict[str, Any]:
    from training.collator import CollatorConfig, MultiverseCollator

    labels = list(ids)
    if method == "reference_f32":
        mask, positions = reference_float_mask(ids, tokenizer)
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "attention_mask": mask,
                "position_ids": positions}
    kind = "block" if method == "block_mask" else "dense"
    cfg = CollatorConfig(pad_id=tokenizer.pad_token_id, mask_kind=kind, pad_to_multiple=128 if kind == "block" else 1)
    batch = MultiverseCollator(tokenizer, cfg)([{"input_ids": ids, "labels": labels}])
    stats = batch.pop("mask_stats")
    batch["skipped"] = float(stats[1] / stats[2]) if stats[2] else 0.0
    return batch


def _step(model: Any, batch: dict[str, Any], device: str) -> None:
    inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items() if k != "skipped"}
    model(**inputs).loss.backward()
    model.zero_grad(set_to_none=True)


def _timed(method: str, ids: list[int], tok: Any, model: Any, device: str) -> tuple[float, float, float | None]:
    """(mask build seconds, forward + backward seconds, skipped fraction) of one step."""
    t0 = time.perf_counter()
    batch = _batch(method, ids, tok)
    t1 = time.perf_counter()
    _step(model, batch, device)
    if device == "cuda":
        torch.cuda.synchronize()
    return t1 - t0, time.perf_counter() - t1, batch.get("skipped")


def one(method: str, length: int, cuda: bool) -> dict[str, Any]:
    """Runs in the child process: warm up, then the best of REPEATS (mask build + forward + backward)."""
    from multiverse.tiny import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    device = "cuda" if cuda else "cpu"
    model = _model(tok, cuda, "flex_attention" if method == "block_mask" else "sdpa")
    ids = trace_ids(length, tok)
    warm = length if cuda else 256  # CUDA: a full-size warm-up compiles flex_attention for this shape
    _step(model, _batch(method, ids[:warm], tok), device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        runs = [_timed(method, ids, tok, model, device) for _ in range(REPEATS)]
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with PeakMemory() as mem:
            runs = [_timed(method, ids, tok, model, device) for _ in range(REPEATS)]
        peak = mem.extra
    mask_s, step_s, skipped = min(runs, key=lambda r: r[0] + r[1])
    out = {"method": method, "tokens": length, "device": device, "mask_s": round(mask_s, 3),
           "fwd_bwd_s": round(step_s, 3), "tokens_per_s": round(length / (mask_s + step_s), 1),
           "peak_mem_mib": round(peak / 2**20, 1)}
    if skipped is not None:
        out["blocks_skipped_vs_causal"] = round(skipped, 4)
    return out


def run_child(method: str, length: int, cuda: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, str(length)] + (["--cuda"] if cuda else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), **_env()})
    if proc.returncode != 0:
        return {"method": method, "tokens": length, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--cuda-lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--cuda", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), args.cuda)))
        return
    results = []
    for length in args.lengths:
        for method in ("dense_bool", "reference_f32"):
            results.append(run_child(method, length, cuda=False))
            print(results[-1], file=sys.stderr)
    if torch.cuda.is_available():
        for length in args.cuda_lengths:
            for method in ("block_mask", "dense_bool"):
                results.append(run_child(method, length, cuda=True))
                print(results[-1], file=sys.stderr)
    print(json.dumps({"benchmark": "train_step", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                      "results": results}))


if __name__ == "__main__":
    main()
