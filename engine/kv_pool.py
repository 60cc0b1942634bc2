"""Paged KV memory with reference counts.

Storage: `k[layer]` and `v[layer]` are [num_kv_heads, num_pages * page_size, head_dim] (a slice of slots is
already in the [heads, keys, dim] layout attention wants); token slot s lives in
page s // page_size. Pages are the unit of allocation and of reference counting: every holder (a branch)
that reads a page holds exactly one reference to it. A page returns to the free list when its count drops to 0.

Fork never copies KV: a child takes a reference on each of its parent's pages and writes its own tokens into
fresh pages, so a parent's partially filled last page is shared read-only and its unused slots stay unused
(copy-on-write is never needed because block tables are kept at slot granularity, see branch.py).

Memory: on CUDA the storage is allocated at construction (as vLLM and SGLang do). On CPU it is an anonymous
memory map, zero by definition and committed by the OS page by page as slots are written, so the resident size
follows the KV in use (free pages are reused last-freed first, keeping what was touched compact).
"""
from __future__ import annotations

import math
import mmap
from collections import Counter
from collections.abc import Iterable

import torch


class OutOfPages(RuntimeError):
    """The pool has no free page; the scheduler preempts or finishes a request."""


class KVPool:
    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_pages: int,
        page_size: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        self.num_pages, self.page_size = num_pages, page_size
        shape = (num_layers, num_kv_heads, num_pages * page_size, head_dim)
        self.k = _zeros(shape, dtype, torch.device(device))
        self.v = _zeros(shape, dtype, torch.device(device))
        self.refcount = [0] * num_pages
        self._free: list[int] = list(range(num_pages - 1, -1, -1))  # a stack; pop() gives page 0 first

    # ------------------------------------------------------------------ accounting
    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self._free)

    def alloc(self) -> int:
        """A fresh page with one reference (the caller's)."""
        if not self._free:
            raise OutOfPages(f"KV pool exhausted: all {self.num_pages} pages of {self.page_size} slots in use")
        page = self._free.pop()
        self.refcount[page] = 1
        return page

    def incref(self, pages: Iterable[int]) -> None:
        for page in pages:
            if self.refcount[page] <= 0:
                raise RuntimeError(f"incref of free page {page}")
            self.refcount[page] += 1

    def decref(self, pages: Iterable[int]) -> None:
        """Drop one reference per page; pages nobody references return to the free list."""
        for page in pages:
            if self.refcount[page] <= 0:
                raise RuntimeError(f"double free of page {page}")
            self.refcount[page] -= 1
            if self.refcount[page] == 0:
                self._free.append(page)

    def pages_for(self, num_tokens: int, tail_free: int) -> int:
        """Pages needed to append num_tokens to a holder whose last writable page has tail_free free slots."""
        missing = num_tokens - tail_free
        return 0 if missing <= 0 else -(-missing // self.page_size)

    # ------------------------------------------------------------------ invariants
    def check_integrity(self, holders: Iterable[list[int]] = ()) -> None:
        """Assert: free + referenced == all pages; counts equal the references held by `holders`.

        O(pages) but in C-level passes (set, count, min): a computed pool has tens of thousands of pages and tests
        run this after every step. Referenced pages == held pages follows from: every held page's count equals its
        holders, as many pages have a count as are held, no free page is held, free + counted == all.
        """
        free = set(self._free)
        assert len(free) == len(self._free), "a page is on the free list twice"
        held = Counter(page for pages in holders for page in pages)
        assert min(self.refcount, default=0) >= 0, "a page has a negative refcount"
        assert free.isdisjoint(held), "a referenced page is on the free list"
        referenced = self.num_pages - self.refcount.count(0)
        assert len(free) + referenced == self.num_pages, "a page is neither free nor referenced (leak)"
        same = referenced == len(held) and all(self.refcount[p] == n for p, n in held.items())
        assert same, f"refcounts differ from holders: {_diff(self.refcount, held)}"


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zero-filled storage; on CPU lazily committed (see the module docstring)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = math.prod(shape) * dtype.itemsize
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).view(shape)  # the tensor keeps the map alive


def _diff(refcount: list[int], held: Counter) -> dict[int, tuple[int, int]]:
    """page -> (its count, references held) where they differ (only on failure: a full pass in Python)."""
    referenced = {page: count for page, count in enumerate(refcount) if count}
    pages = set(referenced) | set(held)
    return {p: (referenced.get(p, 0), held.get(p, 0)) for p in sorted(pages) if referenced.get(p, 0) != held.get(p, 0)}
