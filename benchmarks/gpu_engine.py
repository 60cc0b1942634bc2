"""The native engine parts of benchmarks/gpu.py: SPEC §5 exactness and decoding throughput on one device.

exactness(setup, dtype): scripted Multiverse traces (nested blocks, several requests at once) decoded by the
  engine with logprobs; every sampled position's logprob is compared with ONE teacher-forced forward over the
  final sequence with the core's training mask and positions (dense bool mask, SDPA).
throughput(setup, batch, repeats): the workload of benchmarks/engine.py (prefix 64, 4 paths x 64, conclusion
  16, scripted greedy) decoded by the engine (forks), the same engine with parallel=False on the same tokens,
  and HF `generate` on the same tokens; round robin, tokens/s from the best run, speedups as median paired ratios.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Any

import torch
from transformers import LogitsProcessorList

from benchmarks.engine import HFScript, run_engine, structured_ids
from engine.api import MultiverseLM
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import StructureRules, dense_mask, position_ids
from multiverse.encode import encode_trace
from multiverse.synthetic import synthetic_trace
from multiverse.tags import StructureVocab

PROMPTS = ["Let's think in parallel.", "Question: what is 12 * 12?", "Consider the triangle", "x"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def teacher_forced_logprobs(model: Any, tok: Any, ids: list[int], device: str) -> torch.Tensor:
    """log_softmax of ONE forward over ids with the core's mask and positions: [L, V] float32."""
    mask = dense_mask(ids, tok)[None, None].to(device)
    pos = position_ids(ids, tok)[None].to(device)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device), attention_mask=mask, position_ids=pos).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def exactness(model: Any, tok: Any, device: str, tolerance: float, blocks: int) -> dict[str, Any]:
    """Max |engine logprob - teacher-forced logprob| over every sampled position of 4 scripted requests."""
    targets, params = [], []
    for i, prompt in enumerate(PROMPTS):
        p_ids = tok(prompt)["input_ids"]
        body = "Plan: " + synthetic_trace(seed=i, blocks=blocks)
        target = p_ids + encode_trace(body, tok) + [tok.eos_token_id]
        targets.append(target)
        script = ScriptedProcessor(target, len(p_ids), tok)
        params.append(SamplingParams(max_new_tokens=4000, temperature=0.7, seed=1, logprobs=True, logits_processors=[script]))
    lm = MultiverseLM(model, tok, num_pages=2048, page_size=16)
    outs = lm.generate(PROMPTS, params, raw=True)  # the scripts start with tok(prompt): no chat template
    worst, positions, forks = 0.0, 0, 0
    for out, target, p in zip(outs, targets, params):
        if p.logits_processors[0].misses or out.prompt_token_ids + out.token_ids != target:
            raise AssertionError("the engine left its script: the structure was not decoded as written")
        ref = teacher_forced_logprobs(model, tok, target, device)
        n = len(out.prompt_token_ids)
        sampled = [i for i, lp in enumerate(out.logprobs) if lp is not None]
        got = torch.tensor([out.logprobs[i] for i in sampled])
        want = torch.stack([ref[n + i - 1, target[n + i]] for i in sampled]).cpu()
        worst = max(worst, float((got - want).abs().max()))
        positions += len(sampled)
        forks += out.stats.num_forks
    return {"dtype": str(model.dtype).removeprefix("torch."), "requests": len(outs), "sampled_positions": positions,
            "forks": forks, "max_abs_logprob_diff": worst, "tolerance": tolerance, "ok": worst <= tolerance,
            "kv_pages_left": lm.pool.num_used}


def _run_hf(model: Any, prompt: list[int], gens: list[list[int]], device: str) -> float:
    n = len(gens[0])
    script = HFScript(gens, len(prompt))
    script.targets = script.targets.to(device)
    ids = torch.tensor([prompt] * len(gens), device=device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, logits_processor=LogitsProcessorList([script]), pad_token_id=0)
    _sync(device)
    elapsed = time.perf_counter() - start
    if out[:, len(prompt):].tolist() != gens:
        raise AssertionError("HF generate left its script")
    return elapsed


def throughput(model: Any, tok: Any, device: str, batch: int, repeats: int, warm_up: bool) -> dict[str, Any]:
    vocab = StructureVocab.from_tokenizer(tok)
    rng = random.Random(batch)
    text_ids = [i for i in range(3, min(256, len(tok))) if tok.decode([i]).strip()]
    prompt = tok("Let's think in parallel.")["input_ids"]
    full = [structured_ids(rng, vocab, text_ids)[0] + [tok.eos_token_id] for _ in range(batch)]
    par = MultiverseLM(model, tok, num_pages=8192, page_size=16, max_running=64)
    seq = MultiverseLM(model, tok, num_pages=8192, page_size=16, max_running=64, parallel=False)
    on, off = StructureRules(), StructureRules(parallel=False)

    def timed_engine(lm: MultiverseLM, rules: StructureRules) -> float:
        _sync(device)
        elapsed = run_engine(lm, tok, prompt, full, rules)[0]
        _sync(device)
        return elapsed

    contenders = {"engine": lambda: timed_engine(par, on), "sequential": lambda: timed_engine(seq, off),
                  "hf_generate": lambda: _run_hf(model, prompt, full, device)}
    for fn in contenders.values() if warm_up else ():  # the first batch warms kernels, allocator and caches
        fn()
    rounds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):  # round robin: a slow moment hits every contender of a round alike
        for name, fn in contenders.items():
            rounds[name].append(fn())
    outs = run_engine(par, tok, prompt, full, on)[1]
    generated = sum(len(o.token_ids) for o in outs)  # tokens written, forced ones included: the same for all three

    def ratio(slow: str, fast: str) -> float:
        return round(statistics.median(a / b for a, b in zip(rounds[slow], rounds[fast])), 3)

    row: dict[str, Any] = {"batch": batch, "tokens_written": generated,
                           "degree_of_parallelism": round(outs[0].stats.degree_of_parallelism, 3)}
    for name, times in rounds.items():
        row[f"{name}_tokens_per_s"] = round(generated / min(times), 1)
    row.update(fork_speedup_vs_sequential=ratio("sequential", "engine"), speedup_vs_hf_generate=ratio("hf_generate", "engine"),
               sequential_vs_hf_generate=ratio("hf_generate", "sequential"))
    return row
