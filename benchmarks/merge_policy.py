"""merge="reuse" (exact KV reuse) against merge="refresh" (re-encode the joined paths) on the shipped model.

Three measurements on the first N held-out remainders questions (greedy):
  accuracy       each policy graded like `multiverse eval` (records under OUT/<policy>/records.jsonl)
  merge latency  per question at batch 1, ABBA-paired request wall times; the refresh cost is the paired
                 difference (median, ms) next to the path tokens it re-encodes
  similarity     the hidden states of the tokens from <Conclusion> on (first K) under both policies, by
                 teacher forcing the reuse run's final ids: the core's Multiverse layout (what reuse computes)
                 against one causal forward at positions 0..L-1 (what refresh computes); cosine per layer and
                 token, mean over questions -> OUT/merge_similarity.png (a heatmap, layers x tokens)
Prints ONE JSON line.

    python benchmarks/merge_policy.py [--questions 40] [--speed-questions 12] [--tokens 24] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine.params import SamplingParams  # noqa: E402
from multiverse.attention import dense_mask, position_ids  # noqa: E402
from multiverse.demo import DEFAULT_MODEL  # noqa: E402
from multiverse.evaluation.backends import make_backend  # noqa: E402
from multiverse.evaluation.protocol import EvalConfig  # noqa: E402
from multiverse.evaluation.records import RecordFile  # noqa: E402
from multiverse.evaluation.report import summarise  # noqa: E402
from multiverse.evaluation.runner import build_prompt, run_samples  # noqa: E402
from multiverse.evaluation.tasks import load_task  # noqa: E402

POLICIES = ("reuse", "refresh")


def accuracy(backend, problems, out: str) -> tuple[dict, dict]:
    acc, records = {}, {}
    for merge in POLICIES:
        config = EvalConfig(max_new_tokens=2048, controls={"merge": merge})
        rec = RecordFile(os.path.join(out, merge, "records.jsonl"))
        done = run_samples(backend, problems, config, rec, desc=merge)
        acc[merge] = summarise(done, 1)["remainders"]["avg@1"]
        records[merge] = done
    return acc, records


def latency(lm, prompts: list, rounds: int = 2) -> dict:
    """ABBA-paired batch-1 walls; returns the median extra ms of refresh and its re-encoded tokens."""
    extra, tokens = [], []
    for prompt in tqdm(prompts, desc="latency"):
        walls: dict[str, list[float]] = {m: [] for m in POLICIES}
        for r in range(rounds):
            for merge in POLICIES if r % 2 == 0 else POLICIES[::-1]:
                start = time.perf_counter()
                out = lm.generate([prompt], SamplingParams(max_new_tokens=2048, temperature=0, merge=merge))[0]
                walls[merge].append(time.perf_counter() - start)
                if merge == "refresh" and r == 0:
                    tokens += out.stats.merge_prefill_tokens
        extra.append(1000 * (statistics.fmean(walls["refresh"]) - statistics.fmean(walls["reuse"])))
    q = statistics.quantiles(extra, n=4) if len(extra) > 1 else [extra[0]] * 3
    return {"refresh_extra_ms_median": statistics.median(extra), "quartiles_ms": [q[0], q[2]],
            "reencoded_tokens_mean": statistics.fmean(tokens) if tokens else 0.0, "merges": len(tokens)}


@torch.no_grad()
def similarity(lm, outputs: list, k: int) -> torch.Tensor:
    """Cosine [layers + 1, k] between the two policies' hidden states of the first k tokens from <Conclusion>."""
    conclusion = lm.vocab.tags.conclusion_open
    sums, counts = None, torch.zeros(k)
    for out in outputs:
        if conclusion not in out.token_ids:
            continue
        ids = out.prompt_token_ids + out.token_ids
        at = len(out.prompt_token_ids) + out.token_ids.index(conclusion)
        n = min(k, len(ids) - at)
        x = torch.tensor([ids])
        mv = lm.model(input_ids=x, attention_mask=dense_mask(ids, lm.tokenizer)[None, None],
                      position_ids=position_ids(ids, lm.tokenizer)[None], output_hidden_states=True).hidden_states
        causal = lm.model(input_ids=x, output_hidden_states=True).hidden_states
        cos = torch.stack([torch.cosine_similarity(a[0, at : at + n], b[0, at : at + n], dim=-1) for a, b in zip(mv, causal)])
        sums = torch.zeros(len(mv), k) if sums is None else sums
        sums[:, :n] += cos
        counts[:n] += 1
    return sums / counts.clamp(min=1)


def heatmap(cos: torch.Tensor, path: str, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    im = ax.imshow(cos.numpy(), aspect="auto", cmap="viridis", vmin=float(cos.min()), vmax=1.0, origin="lower")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(cos.shape[0]), ["emb"] + [str(i) for i in range(1, cos.shape[0])])
    ax.set_ylabel("layer")
    ax.set_xlabel("token from <Conclusion> on (labels: the first question's)", fontsize=8)
    ax.set_title("cosine similarity of hidden states after the merge: reuse vs refresh (mean over questions)", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--speed-questions", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=24, help="tokens from <Conclusion> on in the heatmap")
    ap.add_argument("--out", default=str(_HERE / "results"))
    args = ap.parse_args()
    torch.manual_seed(0)
    backend = make_backend("native", model=str(DEFAULT_MODEL))
    lm = backend.lm
    problems = [("remainders", p) for p in load_task("remainders", limit=args.questions)]
    with tempfile.TemporaryDirectory() as tmp:
        acc, records = accuracy(backend, problems, tmp)
    prompts = [build_prompt(p, EvalConfig(), lm.tokenizer) for _, p in problems[: args.speed_questions]]
    speed = latency(lm, prompts)
    outputs = lm.generate(prompts, SamplingParams(max_new_tokens=2048, temperature=0))
    cos = similarity(lm, outputs, args.tokens)
    first = next(o for o in outputs if o.stats.num_forks)
    at = first.token_ids.index(lm.vocab.tags.conclusion_open)
    labels = [lm.tokenizer.decode([t]).replace("\n", "\\n") for t in first.token_ids[at : at + args.tokens]]
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "merge_similarity.png")
    heatmap(cos, png, labels + [""] * (args.tokens - len(labels)))
    same = sum(a["raw_text"] == b["raw_text"] for a, b in zip(records["reuse"], records["refresh"]))
    print(json.dumps({
        "questions": len(problems),
        "accuracy": {m: {"mean": a["mean"], "ci95": a["ci95"]} for m, a in acc.items()},
        "identical_outputs": same,
        "latency": speed,
        "cosine_by_layer": [round(float(x), 4) for x in cos.mean(dim=1)],
        "cosine_min": round(float(cos.min()), 4),
        "heatmap": png,
    }))


if __name__ == "__main__":
    main()
