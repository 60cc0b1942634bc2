"""The twelve structure tags and their token ids in one tokenizer.

Invariant: every tag is exactly one token id; detection at run time compares ids, never text.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

TAG_NAMES: tuple[str, ...] = ("Think", "Parallel", "Goal", "Outline", "Path", "Conclusion")
TAGS: tuple[str, ...] = tuple(t for name in TAG_NAMES for t in (f"<{name}>", f"</{name}>"))


@dataclass(frozen=True)
class TagIds:
    """Token ids of the twelve tags (open and close) in one vocabulary."""

    think_open: int
    think_close: int
    parallel_open: int
    parallel_close: int
    goal_open: int
    goal_close: int
    outline_open: int
    outline_close: int
    path_open: int
    path_close: int
    conclusion_open: int
    conclusion_close: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "TagIds":
        ids = []
        for tag in TAGS:
            tid = tokenizer.convert_tokens_to_ids(tag)
            if tid is None or tid == getattr(tokenizer, "unk_token_id", None):
                raise ValueError(
                    f"tokenizer has no single token for {tag}; call multiverse.tokens.add_structure_tokens first"
                )
            ids.append(int(tid))
        return cls(*ids)

    def all(self) -> tuple[int, ...]:
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)

    @cached_property
    def id_set(self) -> frozenset[int]:
        return frozenset(self.all())


@dataclass(frozen=True)
class StructureVocab:
    """What the token-level rules need from a tokenizer: tag ids, and text <-> ids for labels."""

    tags: TagIds
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "StructureVocab":
        if isinstance(tokenizer, StructureVocab):
            return tokenizer
        return cls(
            tags=TagIds.from_tokenizer(tokenizer),
            encode=lambda text: list(tokenizer.encode(text, add_special_tokens=False)),
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
        )
