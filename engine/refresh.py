"""merge="refresh": the re-prefill join of ThreadWeaver-style engines, as an alternative to exact KV reuse.

At the merge, the children's KV (each path computed blind to its siblings, SPEC §3) is dropped. The parent
appends the joined path tokens (path 1, ..., path n in label order, nested blocks included) to its own table at
sequential positions g+1, g+2, ... and computes them in the next forward with plain causal attention over the
prefix and each other; `<Conclusion>` follows at the next position. So the conclusion reads the paths as a
sequential model would, not as training laid them out (the SPEC §5 invariant holds for reuse only).
Positions grow by the joined length, so `critical_path` under refresh counts the re-encoded paths too.
"""
from __future__ import annotations

from engine.branch import Branch
from engine.kv_pool import KVPool


def joined(children: list[Branch]) -> list[int]:
    """The children's own tokens in label order (what the parent re-encodes)."""
    return [t for child in children for t in child.visible[child.num_shared :]]


def reencode(pool: KVPool, parent: Branch, tokens: list[int]) -> int:
    """Give `tokens` fresh slots in the parent at sequential positions after its own (the position of </Goal>),
    pending for the next forward; returns the last position. The caller secured the pages."""
    position = parent.state.position
    for token in tokens:
        position += 1
        parent.append_pending(pool, token, position)
    return position
