"""A tiny local model directory and synthetic Multiverse rows: the CPU demo and the tests train on these.

    python -m training.tiny_assets runs/tiny      # writes runs/tiny/model/ and runs/tiny/data.jsonl

Rows use the Multiverse-1K field names. Each trace splits a small arithmetic task into two parallel paths
(every third row nests a second block inside path 1), so the model has real structure to learn.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from multiverse.structure import sequential_twin


def _block(a: int, b: int, c: int, d: int, nested: bool) -> str:
    path1 = f"a+b = {a}+{b} = {a + b}."
    if nested:
        path1 = (
            f"Split a+b.<Parallel><Goal><Outline>1.1: take a</Outline><Outline>1.2: take b</Outline></Goal>"
            f"<Path>1.1: a = {a}.</Path><Path>1.2: b = {b}.</Path><Conclusion>a+b = {a + b}.</Conclusion></Parallel>"
        )
    return (
        "Let's think in parallel.\n<Parallel>\n<Goal>\n<Outline>1: compute a+b</Outline>\n"
        "<Outline>2: compute c+d</Outline>\n</Goal>\n"
        f"<Path>1: {path1}</Path>\n<Path>2: c+d = {c}+{d} = {c + d}.</Path>\n"
        f"<Conclusion>\nThe product is {a + b}*{c + d} = {(a + b) * (c + d)}.\n</Conclusion>\n</Parallel>"
    )


def synthetic_row(i: int, rng: random.Random) -> dict[str, str]:
    a, b, c, d = (rng.randint(1, 9) for _ in range(4))
    trace = f"<Think>\nWe need (a+b)*(c+d).\n{_block(a, b, c, d, nested=i % 3 == 2)}\nThe answer is {(a + b) * (c + d)}.\n</Think>"
    return {
        "question": f"Let a={a}, b={b}, c={c}, d={d}. What is (a+b)*(c+d)?",
        "deepseek_thinking_trajectory_parallel": trace,
        "deepseek_thinking_trajectory": sequential_twin(trace).strip(),
        "deepseek_attempt": f"The answer is {(a + b) * (c + d)}.",
    }


def synthetic_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [synthetic_row(i, rng) for i in range(n)]


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tiny_model(directory: str | Path, hidden_size: int = 64, seed: int = 0, with_tags: bool = False) -> Path:
    """A random Qwen2 + byte-level BPE tokenizer saved with save_pretrained (tags left to the trainer)."""
    from multiverse.tiny import build_model, build_tokenizer

    tok = build_tokenizer(with_tags=with_tags)
    model = build_model(tok, hidden_size=hidden_size, seed=seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for model/ and data.jsonl")
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    out = Path(args.out)
    write_tiny_model(out / "model")
    write_jsonl(synthetic_rows(args.rows), out / "data.jsonl")
    print(f"wrote {out / 'model'} and {out / 'data.jsonl'} ({args.rows} rows)")


if __name__ == "__main__":
    main()
