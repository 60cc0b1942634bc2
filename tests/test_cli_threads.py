"""--threads and its default: one intra-op thread for models under 50M parameters, counted from safetensors headers."""
from __future__ import annotations

import argparse

import torch

from multiverse import threads
from multiverse.cli import apply_threads
from multiverse.demo import DEFAULT_MODEL


def test_count_params_reads_the_safetensors_headers(tmp_path, tok):
    from multiverse.tiny import build_model

    model = build_model(tok, seed=1)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "model.safetensors")  # the tensors themselves, not just the header
    assert threads.count_params(tmp_path) == sum(t.numel() for t in stored.values()) > 0
    assert threads.count_params(tmp_path / "missing") is None


def test_choose():
    assert threads.choose(None, 600_000) == 1
    assert threads.choose(None, 7_000_000_000) is None  # torch's default
    assert threads.choose(3, 600_000) == 3
    assert threads.choose(None, None) is None


def test_the_default_model_gets_one_thread_and_threads_overrides():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        apply_threads(argparse.Namespace(threads=None, model=str(DEFAULT_MODEL)))
        assert torch.get_num_threads() == 1
        apply_threads(argparse.Namespace(threads=2, model=str(DEFAULT_MODEL)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
