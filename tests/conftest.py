"""Shared fixtures: a tiny tokenizer with the structure tags, built in-process (no hub access)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tok():
    from multiverse.tiny import build_tokenizer

    return build_tokenizer()
