"""The paged KV pool's accounting: references, frees, exhaustion, and that check_integrity catches mistakes."""
from __future__ import annotations

import pytest
import torch

from engine.kv_pool import KVPool, OutOfPages


def pool(num_pages: int = 4, page_size: int = 2) -> KVPool:
    return KVPool(num_layers=1, num_kv_heads=1, head_dim=2, num_pages=num_pages, page_size=page_size, dtype=torch.float32, device="cpu")


def test_shared_pages_return_only_when_nobody_holds_them():
    p = pool()
    a = [p.alloc(), p.alloc()]
    b = list(a)  # a fork: b reads a's pages
    p.incref(b)
    b.append(p.alloc())
    p.check_integrity([a, b])
    p.decref(a)
    assert p.num_free == 1
    p.check_integrity([b])
    p.decref(b)
    assert p.num_free == 4
    p.check_integrity([])


def test_double_free_exhaustion_and_leaks_are_caught():
    p = pool(num_pages=2)
    x = p.alloc()
    p.decref([x])
    with pytest.raises(RuntimeError, match="double free"):
        p.decref([x])
    with pytest.raises(RuntimeError, match="incref of free page"):
        p.incref([x])
    held = [p.alloc(), p.alloc()]
    with pytest.raises(OutOfPages, match="all 2 pages"):
        p.alloc()
    with pytest.raises(AssertionError, match="refcounts differ"):
        p.check_integrity([held[:1]])  # a page nobody admits to holding: a leak
    assert p.pages_for(5, tail_free=1) == 2 and p.pages_for(1, tail_free=1) == 0
