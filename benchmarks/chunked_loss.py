"""Peak memory and time of the causal-LM loss + backward: plain (full fp32 logits) vs chunked (training.loss).

A random LM head [V, H] and hidden states [T, H] (fp32, CPU), every token a target; forward + backward of the
loss w.r.t. hidden states and head weight. Each method runs in a fresh subprocess; peak memory is the rise of the
resident high-water mark (benchmarks/peak_memory.py: reset at the region's start on Linux) over the resident size just before the loss,
so it counts what the loss itself allocates (logits, softmax, their gradients), not the inputs. Also printed: the
same arithmetic for 32K tokens x Qwen2.5's 152,064-entry vocabulary. Readable lines to stderr; ONE JSON line to stdout.

    python benchmarks/chunked_loss.py [--tokens 2048] [--vocab 65536] [--hidden 256] [--chunk 256]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.peak_memory import PeakMemory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPEATS = 2


def one(method: str, T: int, V: int, H: int, chunk: int) -> dict:
    from training.loss import chunked_cross_entropy

    torch.manual_seed(0)
    torch.set_num_threads(1)
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(1, T, H, requires_grad=True)
    labels = torch.randint(0, V, (1, T))
    times = []
    with PeakMemory() as mem:
        for _ in range(REPEATS):  # the best time of REPEATS; the peak over all of them
            hidden.grad, head.weight.grad = None, None
            t0 = time.perf_counter()
            if method == "plain":  # what the HF causal-LM loss does: logits, fp32 upcast, shift, cross-entropy
                logits = head(hidden).float()
                loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
                del logits
            else:
                loss = chunked_cross_entropy(head, hidden, labels, chunk)
            loss.backward()
            times.append(time.perf_counter() - t0)
    seconds = min(times)
    peak = mem.extra
    grad_norm = float(hidden.grad.norm())
    return {"method": method, "peak_mib": round(peak / 2**20, 1), "seconds": round(seconds, 3),
            "loss": float(loss), "hidden_grad_norm": grad_norm}


def qwen_32k_arithmetic(T: int = 32768, V: int = 152064, chunk: int = 4096) -> dict:
    """GiB per sequence of the tensors the loss creates (see training/README.md, "Memory of the loss")."""
    gib = 2**30
    bf16, fp32 = T * V * 2 / gib, T * V * 4 / gib
    return {"tokens": T, "vocab": V, "logits_bf16_gib": round(bf16, 2), "logits_fp32_gib": round(fp32, 2),
            "plain_forward_kept_gib": round(bf16 + 2 * fp32, 2),  # bf16 logits + fp32 copy + log-softmax
            "chunked_chunk_fp32_gib": round(chunk * V * 4 / gib, 2), "chunk": chunk}


def run_child(method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--tokens", str(args.tokens), "--vocab", str(args.vocab),
           "--hidden", str(args.hidden), "--chunk", str(args.chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"method": method, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.tokens, args.vocab, args.hidden, args.chunk)))
        return
    results = {m: run_child(m, args) for m in ("plain", "chunked")}
    for r in results.values():
        print(r, file=sys.stderr)
    plain, chunked = results["plain"], results["chunked"]
    ratio = round(plain["peak_mib"] / max(chunked["peak_mib"], 0.1), 2) if "error" not in {**plain, **chunked} else None
    print(json.dumps({"benchmark": "chunked_loss", "torch": torch.__version__, "tokens": args.tokens,
                      "vocab": args.vocab, "hidden": args.hidden, "chunk": args.chunk,
                      "logits_fp32_mib": round(args.tokens * args.vocab * 4 / 2**20, 1),
                      "results": [plain, chunked], "peak_ratio_plain_over_chunked": ratio,
                      "loss_abs_diff": abs(plain.get("loss", 0) - chunked.get("loss", 0)),
                      "qwen_32k": qwen_32k_arithmetic()}))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
