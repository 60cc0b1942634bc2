"""Shared helpers of the curator tests: a small input file cut from the s1K-1.1 sample, and configs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_pipeline.sentences import split_sentences
from multiverse.data import EXAMPLES_DIR, S1K_SAMPLE

SAMPLE = S1K_SAMPLE  # the first 10 s1K-1.1 rows, shipped in multiverse/data
EXAMPLES = EXAMPLES_DIR


def make_input(path: Path, rows: int = 10, sentences: int = 50) -> list[dict[str, Any]]:
    """The first `rows` sample rows, each trace cut to `sentences` sentences plus a boxed final answer;
    every other row also gets a `deepseek_attempt` (to check that extra fields are carried through)."""
    out = []
    with open(SAMPLE, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == rows:
                break
            row = json.loads(line)
            cut = "".join(split_sentences(row["deepseek_thinking_trajectory"])[:sentences]).rstrip()
            row["deepseek_thinking_trajectory"] = cut + f"\n\n**Final Answer**\n\\boxed{{{100 + i}}}"
            if i % 2 == 0:
                row["deepseek_attempt"] = f"The answer is {100 + i}."
            out.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    return out


def config_dict(source: Path, out: Path, base_url: str, **sections: Any) -> dict[str, Any]:
    """A run's config; keyword arguments update sections (a dict) or set top-level keys (anything else)."""
    cfg: dict[str, Any] = {
        "input": {"source": str(source)},
        "output": {"dir": str(out)},
        "llm": {"base_url": base_url, "api_key": "test", "model": "scripted", "timeout": 2.0},
        "run": {"concurrency": 4, "backoff_initial": 0.01, "backoff_max": 0.05, "progress": False},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(name, {}).update(values)
        else:
            cfg[name] = values
    return cfg


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
