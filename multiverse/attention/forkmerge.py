"""The engine's side of SPEC §5, from the same rules the layout uses.

Invariant: the ids and positions returned here are exactly what `layout` assigns to the same tokens in the
final merged sequence (tests check this on generated sequences).
"""
from __future__ import annotations

from typing import Any, Sequence

from multiverse.attention.scanner import read_label
from multiverse.encode import fork_prefix_ids
from multiverse.tags import StructureVocab


def fork_prefix(label: str, goal_position: int, vocab: Any) -> tuple[list[int], list[int]]:
    """Forced opening of the child with `label`: ids <Path> LABEL ":" at positions g+1, g+2, ..."""
    ids = fork_prefix_ids(label, StructureVocab.from_tokenizer(vocab))
    return ids, [goal_position + 1 + i for i in range(len(ids))]


def merge_token(path_end_positions: Sequence[int], vocab: Any) -> tuple[int, int]:
    """The forced <Conclusion> after a merge and its position m+1 (m = the largest </Path> position)."""
    if not path_end_positions:
        raise ValueError("merge needs the </Path> positions of at least one path")
    return StructureVocab.from_tokenizer(vocab).tags.conclusion_open, max(path_end_positions) + 1


def outline_labels(goal_ids: Sequence[int], vocab: Any) -> list[str | None]:
    """Labels of the outlines in the ids of a goal (`<Goal> ... </Goal>` or any span holding outlines)."""
    v = StructureVocab.from_tokenizer(vocab)
    labels: list[str | None] = []
    current: list[int] | None = None
    for token in goal_ids:
        if token == v.tags.outline_open:
            current = []
        elif token == v.tags.outline_close and current is not None:
            labels.append(read_label(current, v))
            current = None
        elif current is not None:
            current.append(int(token))
    return labels
