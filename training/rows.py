"""Everything the Trainer reads: training rows in curriculum order, evaluation rows, statistics and digests.

    sources -> digests -> cache hit?  -> rows
                          cache miss: examples -> hold out eval questions -> mixing -> ids/labels -> packing
                                      -> cache entry

Evaluation rows come from `data.eval_fraction` (a seeded share of the distinct questions, held out with every
kind of row that carries them, so no twin or sequential trace of an evaluation question is trained on) or from
`data.eval_split` (a hub split or a local file). They are encoded like training samples, never packed.
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import token_cache
from training.config import Config
from training.data import Example, load_examples
from training.encoding import EncodeStats, encode_all
from training.fingerprint import sources, tokenizer_digest
from training.mixing import mix
from training.packing import pack_samples

Sample = dict[str, list[int]]


@dataclass(frozen=True)
class Rows:
    train: list[Sample]  # in training order (samples or packed rows)
    eval: list[Sample]  # one sample per held-out example
    stats: EncodeStats  # of the training samples
    digests: dict[str, Any]  # per source: file size + sha256, or the hub fingerprint
    sha256: str  # of the rows (token_cache.rows_sha256)
    cache: str | None  # the cache entry used or written (None: cache off)
    cache_hit: bool


def hold_out(mv: list[Example], ar: list[Example], fraction: float,
             seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """(mv, ar, held out): a seeded `fraction` of the distinct questions leaves training with all its rows."""
    questions = sorted({ex.question for ex in (*mv, *ar)})
    k = max(1, round(fraction * len(questions))) if fraction > 0 else 0
    held = set(random.Random(seed).sample(questions, k))
    keep = lambda rows: [ex for ex in rows if ex.question not in held]  # noqa: E731
    return keep(mv), keep(ar), [ex for ex in (*mv, *ar) if ex.question in held]


def eval_examples(cfg: Config, baseline: bool) -> list[Example]:
    """The rows of data.eval_split: a local file of Multiverse rows, or that split of the hub dataset."""
    d = cfg.data
    if Path(d.eval_split).suffix in (".jsonl", ".json", ".parquet"):
        sub = dataclasses.replace(d, multiverse=d.eval_split, autoregressive=None)
    else:
        sub = dataclasses.replace(d, split=d.eval_split, autoregressive=None)
    mv, ar = load_examples(sub, baseline)
    return mv + ar


def _build(cfg: Config, tokenizer: Any, progress: bool) -> tuple[list[Sample], list[Sample], EncodeStats]:
    baseline = cfg.train.mode == "autoregressive"
    mv, ar = load_examples(cfg.data, baseline)
    held: list[Example] = []
    if cfg.data.eval_fraction:
        mv, ar, held = hold_out(mv, ar, cfg.data.eval_fraction, cfg.data.seed)
    elif cfg.data.eval_split:
        held = eval_examples(cfg, baseline)
    order = mix(mv, ar, cfg.data.mixing, cfg.data.seed)
    samples, stats = encode_all(order, tokenizer, cfg.data, progress)
    if not samples:
        raise ValueError("no training sample left after tokenisation (all dropped); check block_size and the data")
    evals = encode_all(held, tokenizer, cfg.data, progress=False)[0] if held else []
    if held and not evals:
        raise ValueError("no evaluation sample left after tokenisation; check block_size and the evaluation rows")
    rows = pack_samples(samples, cfg.data.block_size) if cfg.data.packing else samples
    return rows, evals, stats


def build_rows(cfg: Config, tokenizer: Any, progress: bool = True) -> Rows:
    digests = sources(cfg.data)
    entry = None
    if cfg.data.token_cache:
        name = token_cache.key(cfg, tokenizer_digest(tokenizer), digests)
        entry = token_cache.cache_dir(cfg) / f"{name}.npz"
        hit = token_cache.load(entry)
        if hit is not None:
            splits, stats, sha = hit
            return Rows(splits["train"], splits.get("eval", []), EncodeStats(**stats), digests, sha, str(entry), True)
    train, evals, stats = _build(cfg, tokenizer, progress)
    splits = {"train": train, "eval": evals}
    if entry is None:
        return Rows(train, evals, stats, digests, token_cache.rows_sha256(splits), None, False)
    sha = token_cache.save(entry, splits, dataclasses.asdict(stats))
    print(json.dumps({"event": "token_cache_written", "path": str(entry)}))
    return Rows(train, evals, stats, digests, sha, str(entry), False)
