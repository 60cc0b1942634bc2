"""The typed configuration layer: values coerced to the field types at load time, errors placed (file:line, --set)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from data_pipeline.config import CurateConfig
from data_pipeline.config import load_config as load_curate
from multiverse.config_io import ConfigError, dump
from training.config import Config
from training.config import load_config as load_train

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "training" / "configs" / "tiny_cpu.yaml"


def test_a_float_written_as_1e_5_becomes_a_float():
    # PyYAML reads 1e-5 (no dot) as the string "1e-5"; it reached transformers as a str
    assert yaml.safe_load("1e-5") == "1e-5"
    cfg = load_train(TINY, ["train.learning_rate=1e-5", "train.epochs=2", "data.packing=yes"])
    assert cfg.train.learning_rate == 1e-5 and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.data.packing is True


def test_a_file_value_of_the_wrong_type_names_file_line_and_key(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("model:\n  name_or_path: m\ndata:\n  multiverse: d\ntrain:\n  max_steps: 10\n  micro_batch_size: x\n")
    with pytest.raises(ConfigError, match=r"t\.yaml, line 7: train\.micro_batch_size = 'x': input should be"):
        load_train(f)


def test_an_override_of_the_wrong_type_names_the_set_argument():
    with pytest.raises(ConfigError, match=r"^--set run\.concurrency=many: run\.concurrency = 'many'"):
        load_curate(None, ["run.concurrency=many"])
    with pytest.raises(ConfigError, match=r"^--set run\.concurrency=1\.5: "):
        load_curate(None, ["run.concurrency=1.5"])  # no silent truncation of a fraction


def test_unknown_keys_get_a_close_match(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("model: {name_or_path: m}\ndata: {multiverse: d}\ntrain:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"line 4: train: unknown key\(s\) learning_rat \(did you mean learning_rate"):
        load_train(f)
    top = r"^--set trian\.seed=1: the top level: unknown key\(s\) trian \(did you mean train\?"
    with pytest.raises(ConfigError, match=top):
        load_train(None, ["trian.seed=1", "model.name_or_path=m", "data.multiverse=d"])


def test_validate_errors_and_duplicates_are_placed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("run:\n  concurrency: 4\n  max_retries: -1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 3: run\.max_retries must be >= 0"):
        load_curate(f)
    f.write_text("run:\n  concurrency: 4\nrun:\n  progress: false\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 3: run is given twice \(first at line 1\)"):
        load_curate(f)
    f.write_text("run:\n  concurrency: [4\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line \d+, column \d+: not valid YAML"):
        load_curate(f)
    f.write_bytes(b"run:\n  progress: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_curate(f)


def test_dump_round_trips_through_the_loader(tmp_path):
    for cls, load, path, extra in [(Config, load_train, TINY, ["train.learning_rate=1e-5"]),
                                   (CurateConfig, load_curate, REPO / "data_pipeline/configs/s1k.yaml", [])]:
        cfg = load(path, extra)
        f = tmp_path / "resolved.yaml"
        f.write_text(dump(cfg))
        assert isinstance(cfg, cls) and load(f) == cfg


def test_engine_options_go_through_the_typed_layer():
    import torch

    from engine.config import EngineConfig

    cfg = EngineConfig.from_options(num_pages="64", parallel="false", dtype=torch.float32)
    assert (cfg.num_pages, cfg.parallel, cfg.dtype) == (64, False, torch.float32)
    with pytest.raises(TypeError, match=r"num_pagez' \(did you mean num_pages\?\)"):
        EngineConfig.from_options(num_pagez=3)
    with pytest.raises(ValueError, match="num_pages = 'many': input should be a valid integer"):
        EngineConfig.from_options(num_pages="many")
    with pytest.raises(ValueError, match="must be >= 1"):
        EngineConfig.from_options(num_pages=0)
