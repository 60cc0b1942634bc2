"""The KV pool sized from the machine (engine/kv_memory.py): the rule, its cap, an explicit size winning, sizes
that cannot fit refused, a 32K-token request of a Qwen2.5-0.5B-shaped model fitting by default, the start-up
line, /metrics, and a prompt that can never fit refused at once naming the option that raises the capacity."""
from __future__ import annotations

import logging

import httpx
import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from engine.api import MultiverseLM
from engine.config import EngineConfig
from engine.kv_memory import GiB, activation_headroom, available_memory, bytes_per_token, cgroup_dir, cgroup_room, plan_kv
from engine.params import SamplingParams
from multiverse.cli import main
from multiverse.tiny import build_model
from tests.server_support import start

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def qwen25_05b() -> Qwen2Config:
    """The shape of Qwen2.5-0.5B (its config.json), no weights: 24 layers, 2 KV heads of 64, 32K context."""
    return Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
    )


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, seed=3)


def test_bytes_per_token_is_layers_heads_dim_k_and_v_dtype():
    cfg = qwen25_05b()
    assert bytes_per_token(cfg, torch.bfloat16) == 24 * 2 * 64 * 2 * 2 == 12288
    assert bytes_per_token(cfg, torch.float32) == 2 * bytes_per_token(cfg, torch.bfloat16)


def test_the_rule_fraction_of_free_memory_less_headroom_capped_by_running_times_context():
    cfg, dtype = qwen25_05b(), torch.bfloat16
    config = EngineConfig()
    headroom, page = activation_headroom(cfg, config, dtype), 16 * 12288
    cpu = plan_kv(cfg, dtype, config, CPU, available=8 * GiB)
    assert cpu.num_pages == int(0.25 * (8 * GiB - headroom)) // page and "kv_memory_fraction 0.25" in cpu.rule
    gpu = plan_kv(cfg, dtype, config, CUDA, available=20 * GiB)  # the CUDA default, without a GPU: free bytes given
    assert gpu.num_pages == int(0.9 * (20 * GiB - headroom)) // page
    half = plan_kv(cfg, dtype, EngineConfig(kv_memory_fraction=0.5), CPU, available=8 * GiB)
    assert half.num_pages == int(0.5 * (8 * GiB - headroom)) // page
    capped = plan_kv(cfg, dtype, EngineConfig(max_running=2), CUDA, available=60 * GiB)  # 2 x 32K tokens at most
    assert capped.tokens == 2 * 32768 and "capped at max_running 2 x context 32,768" in capped.rule


def test_a_cgroup_limit_lowers_the_room_and_its_absence_does_not(tmp_path):
    """cgroup v2's files: room = memory.max - memory.current; 'max' or no interface (macOS, v1) means no limit."""
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    assert cgroup_room(tmp_path) == 600000
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_room(tmp_path) is None
    assert cgroup_room(tmp_path / "absent") is None


def test_the_cgroup_folder_can_be_named_and_bounds_free_ram(tmp_path, monkeypatch):
    """$MULTIVERSE_CGROUP_DIR names the cgroup v2 folder (else the cgroup2 mount is looked up): its room caps RAM."""
    (tmp_path / "memory.max").write_text("3000000\n")
    (tmp_path / "memory.current").write_text("1000000\n")
    monkeypatch.setenv("MULTIVERSE_CGROUP_DIR", str(tmp_path))
    assert cgroup_dir() == tmp_path and cgroup_room() == 2000000
    assert available_memory(torch.device("cpu")) == 2000000  # far below any machine's free RAM


def test_a_32k_token_request_of_a_qwen25_05b_shaped_model_fits_by_default():
    """As `MultiverseLM(model)` would size it on this machine: float32 weights, free RAM once they are loaded."""
    cfg = qwen25_05b()
    with torch.device("meta"):  # the shape only: no memory, no download
        params = list(AutoModelForCausalLM.from_config(cfg).parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    assert 490e6 < sum(p.numel() for p in params) < 500e6 and weights == 4 * sum(p.numel() for p in params)  # float32
    plan = plan_kv(cfg, torch.float32, EngineConfig(), CPU, available=available_memory(CPU) - weights)
    assert plan.max_request_tokens >= 32768, plan.describe()
    on_24_gib = plan_kv(cfg, torch.float32, EngineConfig(), CPU, available=20 * GiB)  # 24 GiB less the OS, weights
    assert on_24_gib.max_request_tokens >= 4 * 32768  # four such requests at once


def test_explicit_num_pages_wins(model, tok):
    lm = MultiverseLM(model, tok, num_pages=37, kv_memory_fraction=0.9)
    assert lm.pool.num_pages == lm.kv.num_pages == 37 and lm.kv.rule == "num_pages set"
    assert lm.pool.k.shape == (2, 1, 37 * 16, 16)


def test_a_size_that_does_not_fit_in_memory_is_refused(model, tok):
    with pytest.raises(ValueError, match=r"num_pages=1,000,000,000 needs [\d,.]+ GiB of KV .* more than the memory "
                       r"allows \([\d.]+ GiB free on cpu after the weights.*lower num_pages \(--num-pages\)"):
        MultiverseLM(model, tok, num_pages=10**9)
    with pytest.raises(ValueError, match=r"would get 0 pages .* raise kv_memory_fraction"):
        plan_kv(qwen25_05b(), torch.float32, EngineConfig(), CPU, available=200 << 20)  # < MIN_HEADROOM
    with pytest.raises(ValueError, match=r"kv_memory_fraction must be in \(0, 1\], got 1.5"):
        MultiverseLM(model, tok, kv_memory_fraction=1.5)
    typed = EngineConfig.from_options(kv_memory_fraction="0.5", num_pages=None)  # typed like every engine option
    assert (typed.kv_memory_fraction, typed.num_pages) == (0.5, None)
    with pytest.raises(ValueError, match="kv_memory_fraction = 'half': input should be a valid number"):
        EngineConfig.from_options(kv_memory_fraction="half")


def test_the_default_pool_costs_no_resident_memory_until_used(model, tok, caplog):
    def resident() -> int:
        return psutil.Process().memory_info().rss

    with caplog.at_level(logging.INFO, logger="multiverse.engine"):
        before = resident()
        lm = MultiverseLM(model, tok, num_pages=16384)  # 262,144 slots x 2 layers x 16 dims x 2 x float32 = 64 MiB
        grown = resident() - before
    assert lm.kv.nbytes == 64 << 20 and grown < (16 << 20), grown  # CPU: mapped zero pages, committed on write
    out = lm.generate("Consider", SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True))[0]
    assert out.stats.generated_tokens == 8 and float(lm.pool.k.abs().sum()) > 0
    (line,) = [r.getMessage() for r in caplog.records if r.name == "multiverse.engine"]
    assert line.startswith("KV cache: 16,384 pages x 16 tokens = 262,144 tokens, 0.06 GiB (256 bytes/token); "
                           "largest request 262,080 tokens; num_pages set")


def test_a_prompt_that_can_never_fit_names_the_capacity_and_the_option(model, tok):
    config = EngineConfig(page_size=4, reserve_pages=2)
    free = activation_headroom(model.config, config, torch.float32) + 4 * 160 * 1024  # a quarter: 160 pages of 1 KiB
    small = plan_kv(model.config, torch.float32, config, CPU, available=free)
    assert small.num_pages == 160
    assert small.refusal(small.max_request_tokens) is None
    why = small.refusal(small.max_request_tokens + 1)
    assert f"holds {small.max_request_tokens:,} tokens per request" in why
    assert why.endswith("raise kv_memory_fraction (--kv-memory-fraction) or set num_pages (--num-pages)")
    capped = plan_kv(model.config, torch.float32, EngineConfig(max_running=1), CPU, available=8 * GiB)
    assert capped.refusal(10**6).endswith("raise num_pages (--num-pages) or max_running (--max-running)")


def test_metrics_show_capacity_beside_pages_in_use_and_the_server_refuses_what_never_fits(model, tok):
    lm = MultiverseLM(model, tok, num_pages=8, page_size=4, reserve_pages=1)  # 28 tokens per request
    server = start(lm, model_name="tiny", max_model_len=4096)
    try:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        values = dict(line.split() for line in text.splitlines() if line.startswith("multiverse_kv"))
        assert float(values["multiverse_kv_pages_total"]) == 8 and float(values["multiverse_kv_pages_used"]) == 0
        assert float(values["multiverse_kv_capacity_tokens"]) == 32
        assert float(values["multiverse_kv_max_request_tokens"]) == 28
        assert float(values["multiverse_kv_capacity_bytes"]) == lm.kv.nbytes == 32 * 256
        r = httpx.post(server.url + "/generate", json={"input_ids": list(range(40, 80)), "sampling_params": {}}, timeout=10)
        assert r.status_code == 400, r.text
        assert "40 tokens can never fit in the KV cache: it holds 28 tokens per request" in r.text and "num_pages" in r.text
    finally:
        server.stop()


def test_the_flags_of_generate_serve_and_eval(capsys):
    assert main(["generate", "--tiny", "--kv-memory-fraction", "0", "x"]) == 2
    assert "--kv-memory-fraction 0.0: must lie in (0, 1]" in capsys.readouterr().err
    assert main(["serve", "--tiny", "--num-pages", "1", "--port", "0"]) == 2
    assert "--num-pages 1: must be >= 2" in capsys.readouterr().err
    assert main(["eval", "--backend", "openai", "--url", "http://127.0.0.1:9", "--num-pages", "64"]) == 2
    assert "size the native engine's KV pool" in capsys.readouterr().err
    assert main(["generate", "--tiny", "--num-pages", "40", "--no-live", "--max-new-tokens", "3", "x"]) == 0
    assert "KV cache: 40 pages x 16 tokens = 640 tokens" in capsys.readouterr().out
