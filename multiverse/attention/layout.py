"""One pass over token ids -> positions (SPEC §4) and visibility metadata (SPEC §3), in O(L) memory.

The scan drives the same `BranchState` the engine uses, one branch frame per open path, so training and
inference agree by construction. For every token q it records:
  positions[q]           its RoPE position;
  doc_ids[q]             its document (packing): q sees only keys of its own document, positions restart;
  hidden_lo/hi[q, d]     key ranges [lo, hi) that q must not see, one per enclosing path (d < D); a path of
                         block B hides [B's first <Path>, this path's <Path>), i.e. all earlier siblings.
Hidden ranges of different depths are disjoint and lie inside q's document before q.
Non-strict scans never raise: a block that falls back runs sequentially, a truncated row leaves paths open
(exactly what the engine does); `strict=True` raises StructureError naming the token index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from multiverse.attention.scanner import BranchState, Fallback, Fork, PathEnd, StructureRules
from multiverse.encode import fork_prefix_ids
from multiverse.structure.errors import StructureError
from multiverse.tags import StructureVocab

Ids = Sequence[int] | torch.Tensor
Range = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    positions: torch.Tensor  # [L] int64
    doc_ids: torch.Tensor  # [L] int64
    doc_start: torch.Tensor  # [L] int64: index of the first token of q's document
    hidden_lo: torch.Tensor  # [L, D] int64 (D >= 1; unused ranges are empty: lo == hi == 0)
    hidden_hi: torch.Tensor  # [L, D] int64
    fallbacks: tuple[tuple[int, str], ...] = ()  # (token index of </Goal>, reason)
    forced: tuple[int, ...] = ()  # token indices the engine places itself: fork prefixes, merge <Conclusion>
    num_forks: int = 0  # blocks that fork (a block that falls back is not counted)

    @property
    def length(self) -> int:
        return int(self.positions.numel())

    def dense(self) -> torch.Tensor:
        """Bool [L, L], True where query row q may attend key column k.

        Built run by run: tokens with equal metadata (document start, hidden ranges) share their row pattern
        up to the causal bound, so each run blanks its hidden column ranges with one slice assignment.
        """
        L = self.length
        visible = torch.ones(L, L, dtype=torch.bool).tril_()
        key = torch.cat([self.doc_start[:, None], self.hidden_lo, self.hidden_hi], dim=1)
        starts = torch.ones(L, dtype=torch.bool)
        starts[1:] = (key[1:] != key[:-1]).any(dim=1)
        bounds = starts.nonzero().squeeze(1).tolist() + [L]
        depth = self.hidden_lo.shape[1]
        for a, b in zip(bounds[:-1], bounds[1:]):
            row = key[a].tolist()
            visible[a:b, : row[0]] = False
            for d in range(depth):
                visible[a:b, row[1 + d] : row[1 + depth + d]] = False
        return visible


@dataclass
class _Path:
    """A branch being scanned: the root of a document, or one path of a forked block."""

    state: BranchState
    hidden: tuple[Range, ...]
    open_index: int  # token index of its <Path> (or of the document's first token)


@dataclass
class _Block:
    """A forked block whose paths are being scanned; its paths follow one another in merged order."""

    parent: _Path
    labels: tuple[str, ...]
    goal_position: int
    first_path: int  # token index of the first <Path>
    path_ends: list[int] = field(default_factory=list)  # positions of the finished paths' </Path>


Run = tuple[int, int, tuple[Range, ...]]  # tokens [a, b) that share one tuple of hidden ranges


class _Scanner:
    """The scan, resumable: `feed` consumes the next ids (any split of a row gives the same result), `copy`
    snapshots the state (the open branches and blocks) so a later feed can resume from it."""

    def __init__(self, vocab: StructureVocab, rules: StructureRules, strict: bool) -> None:
        self.vocab, self.rules, self.strict = vocab, rules, strict
        self.fallbacks: list[tuple[int, str]] = []
        self.path_opens: list[tuple[int, str]] = []  # (token index of a forked path's <Path>, its label)
        self.merges: list[int] = []  # token index of each forced <Conclusion>
        self.num_forks = 0
        self.stack: list[_Path | _Block] = []  # the open branches and blocks, root first
        self.length = 0  # tokens consumed so far
        self.last_doc: int | None = None  # document of the last consumed token
        self.last_hidden: tuple[Range, ...] = ()  # hidden ranges of the last consumed token

    def run(self, ids: list[int], docs: list[int]) -> tuple[list[int], list[int], list[tuple[Range, ...]]]:
        """(positions [L], per-token index into the hidden-range table, the table) of a whole row."""
        positions, runs = self.feed(ids, docs)
        self.finish()
        which = [0] * len(ids)
        table: dict[tuple[Range, ...], int] = {(): 0}
        for a, b, hidden in runs:
            which[a:b] = [table.setdefault(hidden, len(table))] * (b - a)
        return positions, which, list(table)

    def feed(self, ids: list[int], docs: list[int] | None = None) -> tuple[list[int], list[Run]]:
        """Consume ids[0..n) as tokens [length, length + n) of the row (docs=None: one document).

        Returns their positions [n] and runs of equal hidden ranges; token indices in runs, events and hidden
        ranges are absolute (row) indices. Cost: O(n) list work plus Python work per tag and per run.
        """
        base, L = self.length, len(ids)
        positions: list[int] = [0] * L
        runs: list[Run] = []
        tags = self.vocab.tags.id_set
        if docs is None:
            starts = {0} if base == 0 and L else set()
        else:
            before = [self.last_doc if base else None] + list(docs[:-1])
            starts = {j for j in range(L) if docs[j] != before[j] or base + j == 0}
            self.last_doc = docs[-1] if L else self.last_doc
        cursor = 0
        for i in sorted(starts.union(i for i, t in enumerate(ids) if t in tags)) + [L]:
            if cursor < i:  # a run of text ids [cursor, i) inside one document
                path = self._branch_for(self.stack, ids[cursor], base + cursor)
                p = path.state.position
                path.state.consume_text(ids[cursor:i])
                positions[cursor:i] = range(p + 1, p + 1 + i - cursor)
                runs.append((base + cursor, base + i, path.hidden))
            if i == L:
                break
            if i in starts:
                self._end_document(self.stack, base + i)
                self.stack = [_Path(BranchState(self.vocab, self.rules), (), base + i)]
            cursor = i
            if ids[i] in tags:
                path = self._branch_for(self.stack, ids[i], base + i)
                event = path.state.step(ids[i])
                positions[i] = path.state.position
                runs.append((base + i, base + i + 1, path.hidden))
                self._handle(self.stack, path, event, base + i)
                cursor = i + 1
        self.length += L
        self.last_hidden = runs[-1][2] if runs else self.last_hidden
        return positions, runs

    def finish(self) -> None:
        self._end_document(self.stack, self.length)

    def copy(self) -> "_Scanner":
        """An independent scanner in the same state (frames copied; a block keeps pointing at its parent's copy)."""
        new = object.__new__(_Scanner)
        new.__dict__.update(self.__dict__)
        new.fallbacks, new.path_opens, new.merges = list(self.fallbacks), list(self.path_opens), list(self.merges)
        paths: dict[int, _Path] = {}

        def path(p: _Path) -> _Path:
            if id(p) not in paths:
                state = object.__new__(BranchState)
                state.__dict__.update(p.state.__dict__)
                state.outlines = [list(o) for o in state.outlines]
                paths[id(p)] = _Path(state, p.hidden, p.open_index)
            return paths[id(p)]

        new.stack = [
            path(f) if isinstance(f, _Path) else _Block(path(f.parent), f.labels, f.goal_position, f.first_path, list(f.path_ends))
            for f in self.stack
        ]
        return new

    def _branch_for(self, stack: list[_Path | _Block], token: int, i: int) -> _Path:
        """The branch that consumes token i; opens the next path or merges a block whose paths are done."""
        top = stack[-1]
        if isinstance(top, _Path):
            return top
        done = len(top.path_ends)
        if token == self.vocab.tags.path_open and done < len(top.labels):
            path = _Path(top.parent.state.child(top.goal_position), top.parent.hidden, i)
            if done:
                path.hidden = path.hidden + ((top.first_path, i),)
            stack.append(path)
            self.path_opens.append((i, top.labels[done]))
            return path
        if done < len(top.labels) and self.strict:
            raise StructureError(f"block expects {len(top.labels)} paths, found {done}", token_index=i)
        if token != self.vocab.tags.conclusion_open and self.strict:
            raise StructureError("<Conclusion> must follow the last </Path>", token_index=i)
        stack.pop()
        top.parent.state.merged(max(top.path_ends, default=top.goal_position))
        if token == self.vocab.tags.conclusion_open:
            self.merges.append(i)
        return top.parent

    def _handle(self, stack: list[_Path | _Block], path: _Path, event: Any, i: int) -> None:
        if isinstance(event, Fork):
            self.num_forks += 1
            stack.append(_Block(path, event.labels, event.goal_position, i + 1))
        elif isinstance(event, PathEnd):
            stack.pop()
            block = stack[-1]
            assert isinstance(block, _Block)
            block.path_ends.append(event.position)
        elif isinstance(event, Fallback):
            self.fallbacks.append((i, event.reason))
            if self.strict and event.reason != "disabled":
                raise StructureError(f"block cannot fork: {event.reason}", token_index=i)

    def _end_document(self, stack: list[_Path | _Block], i: int) -> None:
        if not self.strict or not stack:
            return
        open_paths = [f for f in stack[1:] if isinstance(f, _Path)]
        if open_paths:
            at = open_paths[-1].open_index
            raise StructureError(f"unclosed <Path> opened at token {at}", token_index=at)
        if isinstance(stack[-1], _Block):
            raise StructureError("block ends without <Conclusion>", token_index=i - 1)


def as_list(ids: Ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
        return ids.tolist()
    return [int(t) for t in ids]


def layout(
    input_ids: Ids,
    tokenizer: Any,
    doc_ids: Ids | None = None,
    rules: StructureRules | None = None,
    strict: bool = False,
) -> Layout:
    """Positions and visibility metadata of one row of token ids (several documents when `doc_ids` is given)."""
    ids = as_list(input_ids)
    docs = as_list(doc_ids) if doc_ids is not None else [0] * len(ids)
    if len(docs) != len(ids):
        raise ValueError(f"doc_ids has {len(docs)} entries for {len(ids)} tokens")
    vocab = StructureVocab.from_tokenizer(tokenizer)
    scanner = _Scanner(vocab, rules or StructureRules(), strict)
    positions, which, table = scanner.run(ids, docs)
    lo, hi = _ranges_to_tensors(table, which)
    doc_tensor = torch.tensor(docs, dtype=torch.long)
    return Layout(
        positions=torch.tensor(positions, dtype=torch.long),
        doc_ids=doc_tensor,
        doc_start=_doc_starts(doc_tensor),
        hidden_lo=lo,
        hidden_hi=hi,
        fallbacks=tuple(scanner.fallbacks),
        forced=_forced(ids, scanner, vocab),
        num_forks=scanner.num_forks,
    )


def _forced(ids: list[int], scanner: _Scanner, vocab: StructureVocab) -> tuple[int, ...]:
    """Indices of the tokens the engine forces (SPEC §5): each forked path's `<Path> LABEL ":"` (as far as the
    ids agree with it) and each merge's `<Conclusion>`."""
    out = list(scanner.merges)
    for i, label in scanner.path_opens:
        for k, want in enumerate(fork_prefix_ids(label, vocab)):
            if i + k >= len(ids) or ids[i + k] != want:
                break
            out.append(i + k)
    return tuple(sorted(out))


def _ranges_to_tensors(table: list[tuple[Range, ...]], which: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct range tuples [U] and a per-token index into them -> lo, hi [L, D] (padding ranges are (0, 0))."""
    depth = max((len(h) for h in table), default=0) or 1
    flat = [[x for r in h for x in r] + [0, 0] * (depth - len(h)) for h in table]
    t = torch.tensor(flat, dtype=torch.long).view(len(table), depth, 2)[torch.tensor(which, dtype=torch.long)]
    return t[..., 0].contiguous(), t[..., 1].contiguous()


def _doc_starts(docs: torch.Tensor) -> torch.Tensor:
    L = docs.numel()
    if L == 0:
        return docs.clone()
    new = torch.ones(L, dtype=torch.bool)
    new[1:] = docs[1:] != docs[:-1]
    idx = torch.where(new, torch.arange(L), torch.zeros(L, dtype=torch.long))
    return torch.cummax(idx, dim=0).values


def position_ids(input_ids: Ids, tokenizer: Any, doc_ids: Ids | None = None, **kw: Any) -> torch.Tensor:
    """RoPE positions per SPEC §4: LongTensor [L] (or [B, L] for a 2-D input)."""
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2:
        return torch.stack([position_ids(r, tokenizer, _row(doc_ids, b), **kw) for b, r in enumerate(input_ids)])
    return layout(input_ids, tokenizer, doc_ids, **kw).positions


def dense_mask(input_ids: Ids, tokenizer: Any, doc_ids: Ids | None = None, **kw: Any) -> torch.Tensor:
    """Multiverse Attention as a bool [L, L] (or [B, L, L]); True = may attend."""
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2:
        return torch.stack([dense_mask(r, tokenizer, _row(doc_ids, b), **kw) for b, r in enumerate(input_ids)])
    return layout(input_ids, tokenizer, doc_ids, **kw).dense()


def _row(doc_ids: Ids | None, b: int) -> Ids | None:
    return None if doc_ids is None else doc_ids[b]


def pack(samples: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Concatenate samples into one row with a document id per token (sample index)."""
    ids: list[int] = []
    docs: list[int] = []
    for d, sample in enumerate(samples):
        ids.extend(int(t) for t in sample)
        docs.extend([d] * len(sample))
    return ids, docs
