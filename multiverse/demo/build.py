"""Rebuild the default model: a tiny Qwen2 trained on toy Multiverse data, on CPU, in a few minutes.

    python -m multiverse.demo.build [--out multiverse/assets/tiny-multiverse] [--steps 600]

Steps: a BPE tokenizer trained on the toy corpus (structure tags added as single tokens), a random Qwen2,
toy rows (`multiverse.demo.toy`), then `training.run.train` with Multiverse Attention (dense masks on CPU,
packing), and the final weights + tokenizer copied to --out. Seeds are fixed: the same command gives the same model.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from multiverse.demo import DEFAULT_MODEL



def build(out: str, work: str, steps: int, rows: int, hidden: int, layers: int) -> dict:
    from multiverse.demo.toy import toy_corpus, write_toy_jsonl
    from multiverse.tiny import build_model, build_tokenizer
    from training.config import load_config
    from training.run import train

    os.makedirs(work, exist_ok=True)
    tok = build_tokenizer(vocab_size=384, corpus=toy_corpus())
    init = os.path.join(work, "init")
    build_model(tok, hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2, seed=0).save_pretrained(init)
    tok.save_pretrained(init)
    data = os.path.join(work, "toy.jsonl")
    write_toy_jsonl(data, rows, seed=0)
    overrides = [
        f"model.name_or_path={init}", "model.dtype=float32", "model.attn_implementation=sdpa",
        f"data.multiverse={data}", "data.mixing=multiverse_only", "data.prompt.multiverse_suffix=''", "data.block_size=512", "data.packing=true",
        f"train.output_dir={os.path.join(work, 'run')}", f"train.max_steps={steps}", "train.micro_batch_size=4",
        "train.learning_rate=0.003", "train.warmup_ratio=0.05", "train.weight_decay=0.0", "train.logging_steps=50",
        f"train.save_steps={steps}", "train.seed=0",
    ]
    start = time.perf_counter()
    result = train(load_config(None, overrides))
    _stop_at_end_of_turn(result["output_dir"], tok)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name in os.listdir(result["output_dir"]):
        src = os.path.join(result["output_dir"], name)
        if os.path.isfile(src) and not name.startswith("training_args"):
            shutil.copy(src, out)
    losses = [h["loss"] for h in result["log_history"] if "loss" in h]
    return {"out": out, "steps": result["global_step"], "seconds": round(time.perf_counter() - start, 1),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def _stop_at_end_of_turn(model_dir: str, tok: object) -> None:
    """Generation ends at the chat template's end of turn as well as at the end-of-text token."""
    from transformers import GenerationConfig

    from multiverse.tiny import IM_END

    ids = [tok.convert_tokens_to_ids(IM_END), tok.eos_token_id]  # type: ignore[attr-defined]
    GenerationConfig(eos_token_id=ids, pad_token_id=tok.pad_token_id).save_pretrained(model_dir)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_MODEL))
    parser.add_argument("--work", default="runs/demo")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.work, args.steps, args.rows, args.hidden, args.layers)))


if __name__ == "__main__":
    main()
