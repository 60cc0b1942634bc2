"""Shared fixtures: a tiny tokenizer with the structure tags, built in-process (no hub access)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tok():
    from multiverse.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are overhead-bound; one intra-op thread avoids oversubscribing the 2-core CI box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
