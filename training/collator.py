"""Samples (or packed rows) -> one padded micro-batch with Multiverse Attention masks and positions.

Input features: {"input_ids": [n], "labels": [n], "doc_ids": [n] (optional, packed rows)}.
Output batch (B rows, L = longest row):
  input_ids     [B, L] int64    pad_id after each row's end
  labels        [B, L] int64    -100 on prompts, pads and the first token of every document
  position_ids  [B, L] int64    core layout positions (SPEC §4); restart in every document
  attention_mask               dense bool [B, 1, L, L] (True = may attend)  |  FlexAttention BlockMask
  mask_stats    [3] float64     (tokens, skipped key blocks, key blocks a causal mask would compute);
                               the trainer pops it before the forward pass and logs the ratio
The padding of a row is its own document, so every query row sees at least itself (no NaN from softmax).
All rules come from `multiverse.attention.layout`; nothing here re-derives them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from multiverse.attention import Layout, StructureRules, block_mask_from_layouts, block_tables, layout
from training.encoding import IGNORE


@dataclass(frozen=True)
class CollatorConfig:
    pad_id: int
    mask_kind: str = "dense"  # dense | block
    block_size: int = 128  # FlexAttention block; also the tile of the skipped-blocks statistic
    parallel: bool = True  # False: the autoregressive baseline (plain causal attention per document)
    device: str | None = None  # where BlockMask tensors live: the GPU for flex attention (its mask_mod reads
    # metadata tensors on that device, so the collator must then run in the main process: no loader workers)
    pad_to_multiple: int = 1  # round L up (e.g. to the block size for FlexAttention)


class MultiverseCollator:
    def __init__(self, tokenizer: Any, cfg: CollatorConfig) -> None:
        if cfg.mask_kind not in ("dense", "block"):
            raise ValueError(f"mask_kind must be dense or block, got {cfg.mask_kind!r}")
        self.tokenizer, self.cfg = tokenizer, cfg
        self.rules = StructureRules(parallel=cfg.parallel)

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        L = max(len(f["input_ids"]) for f in features)
        m = self.cfg.pad_to_multiple
        L = (L + m - 1) // m * m
        rows = [self._pad_row(f, L) for f in features]
        ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
        labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
        lays = [layout(r[0], self.tokenizer, r[2], rules=self.rules) for r in rows]
        batch: dict[str, Any] = {
            "input_ids": ids,
            "labels": labels,
            "position_ids": torch.stack([lay.positions for lay in lays]),
        }
        batch["attention_mask"] = self._mask(lays)
        batch["mask_stats"] = self._stats(lays, features, batch["attention_mask"])
        return batch

    def _pad_row(self, f: dict[str, list[int]], L: int) -> tuple[list[int], list[int], list[int]]:
        n = len(f["input_ids"])
        docs = list(f.get("doc_ids") or [0] * n)
        labels = list(f["labels"])
        for i in range(n):  # a document's first token is never a target (it would be predicted across documents)
            if i == 0 or docs[i] != docs[i - 1]:
                labels[i] = IGNORE
        pad = L - n
        pad_doc = (max(docs) + 1) if docs else 0
        return (
            list(f["input_ids"]) + [self.cfg.pad_id] * pad,
            labels + [IGNORE] * pad,
            docs + [pad_doc] * pad,
        )

    def _mask(self, lays: list[Layout]) -> Any:
        if self.cfg.mask_kind == "block":
            return block_mask_from_layouts(lays, self.cfg.block_size, self.cfg.device)
        return torch.stack([lay.dense() for lay in lays])[:, None]  # [B, 1, L, L]

    def _stats(self, lays: list[Layout], features: list[dict[str, list[int]]], mask: Any) -> torch.Tensor:
        tokens = sum(len(f["input_ids"]) for f in features)
        if isinstance(mask, torch.Tensor):
            counts = [skipped_blocks(lay, self.cfg.block_size) for lay in lays]
            skipped, causal = sum(c[0] for c in counts), sum(c[1] for c in counts)
        else:  # a BlockMask already holds the per-row counts of computed key blocks
            n = mask.kv_num_blocks.shape[-1]
            causal = len(lays) * n * (n + 1) // 2
            computed = int(mask.kv_num_blocks.sum()) + int(mask.full_kv_num_blocks.sum())
            skipped = causal - computed
        return torch.tensor([tokens, skipped, causal], dtype=torch.float64)


def skipped_blocks(lay: Layout, block_size: int) -> tuple[int, int]:
    """(key blocks skipped by the mask, key blocks plain causal attention computes) over one row's tiles.

    Counts (query block, key block) tiles on or below the diagonal: those a causal kernel would compute.
    Skipped ones hold no visible pair (sibling paths, other documents, padding).
    """
    full, partial = block_tables(lay, block_size)
    n = full.shape[0]
    causal_tiles = n * (n + 1) // 2
    computed = int((full | partial).sum())
    return causal_tiles - computed, causal_tiles
