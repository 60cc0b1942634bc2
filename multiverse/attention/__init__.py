"""Token-level Multiverse rules: positions (SPEC §4), visibility (SPEC §3), fork and merge (SPEC §5)."""
from multiverse.attention.blocks import block_mask, block_mask_from_layouts, block_tables, skipped_fraction
from multiverse.attention.counts import TokenCounts, count_tokens, degree_of_parallelism
from multiverse.attention.forkmerge import fork_prefix, merge_token, outline_labels
from multiverse.attention.layout import Layout, dense_mask, layout, pack, position_ids
from multiverse.attention.resume import LayoutScan
from multiverse.attention.scanner import BranchState, Fallback, Fork, PathEnd, StructureRules, read_label

__all__ = [
    "BranchState",
    "Fallback",
    "Fork",
    "Layout",
    "LayoutScan",
    "PathEnd",
    "StructureRules",
    "TokenCounts",
    "block_mask",
    "block_mask_from_layouts",
    "block_tables",
    "count_tokens",
    "degree_of_parallelism",
    "dense_mask",
    "fork_prefix",
    "layout",
    "merge_token",
    "outline_labels",
    "pack",
    "position_ids",
    "read_label",
    "skipped_fraction",
]
