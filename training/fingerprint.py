"""The run fingerprint: what makes two training runs the same run, so a resume never mixes two of them.

    {"mode", "world_size", "model.*", "tokenizer.sha256", "data.<source>" (file size + sha256, or the hub
     dataset's fingerprint), "data.<setting>" (every data key), "data.rows_sha256" (the tokenised rows),
     "train.<hyperparameter>", "train.extra_args"}

It is written to `output_dir/multiverse_run.json` when a run starts and into every checkpoint. A resume (or a new
run in an output_dir that holds another run) compares the stored fingerprint with the current one key by key and
stops with the keys that differ. Left out on purpose: where things go (output_dir, cache), how often to log, save
or evaluate, the epoch count and max_steps (extending a run is fine) and kernels that compute the same numbers
(attention implementation, chunked or fused loss, gradient checkpointing).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from training.config import Config, ConfigError, DataConfig

FILE = "multiverse_run.json"
DATA_KEYS_OUTSIDE = ("token_cache", "cache_dir")
TRAIN_KEYS = ("mode", "micro_batch_size", "grad_accum", "learning_rate", "lr_scheduler", "warmup_ratio",
              "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "bf16", "seed", "extra_args")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_digest(source: str, cfg: DataConfig) -> dict[str, Any]:
    """A local file: its size and sha256. A hub dataset or save_to_disk folder: the datasets fingerprint."""
    path = Path(source)
    if path.is_file():
        return {"source": source, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    from training.data import open_dataset

    ds = open_dataset(source, cfg)
    return {"source": source, "rows": len(ds), "fingerprint": ds._fingerprint}


def tokenizer_digest(tokenizer: Any) -> str:
    """Vocabulary, merges, added tokens, chat template and pad token (after the structure tags were added)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = json.dumps([getattr(tokenizer, "chat_template", None), tokenizer.pad_token, len(tokenizer)])
    return hashlib.sha256((body + extra).encode()).hexdigest()


def _flat(prefix: str, tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "extra_args":
            out.update(_flat(f"{prefix}{key}.", value))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def sources(cfg: DataConfig) -> dict[str, dict[str, Any]]:
    named = {"data.multiverse": cfg.multiverse, "data.autoregressive": cfg.autoregressive}
    if cfg.eval_split and Path(cfg.eval_split).is_file():
        named["data.eval_split"] = cfg.eval_split
    return {key: source_digest(src, cfg) for key, src in named.items() if src}


def model_digest(name_or_path: str) -> dict[str, Any]:
    config = Path(name_or_path) / "config.json"
    out: dict[str, Any] = {"model.name_or_path": name_or_path}
    if config.is_file():
        out["model.config_sha256"] = file_sha256(config)
    return out


def run_fingerprint(cfg: Config, tokenizer: Any, digests: dict[str, Any], rows_sha256: str,
                    world_size: int) -> dict[str, Any]:
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in DATA_KEYS_OUTSIDE}
    for key in ("multiverse", "autoregressive"):
        data.pop(key)  # named by their digests instead
    train = dataclasses.asdict(cfg.train)
    out: dict[str, Any] = {"mode": cfg.train.mode, "world_size": world_size}
    out |= model_digest(cfg.model.name_or_path)
    out |= {"model.dtype": cfg.model.dtype, "model.lora": dataclasses.asdict(cfg.model.lora)}
    out["tokenizer.sha256"] = tokenizer_digest(tokenizer)
    out |= digests
    out |= _flat("data.", data)
    out["data.rows_sha256"] = rows_sha256
    out |= {f"train.{k}": train[k] for k in TRAIN_KEYS if k != "mode"}
    return json.loads(json.dumps(out))  # the form it has after a round trip through the file


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per key whose value differs ("key: stored -> current"), in a stable order."""
    out = []
    for key in sorted(set(stored) | set(current), key=lambda k: (k != "mode", k)):
        a, b = stored.get(key, "(absent)"), current.get(key, "(absent)")
        if a != b:
            out.append(f"{key}: {_short(a)} in the stored run, {_short(b)} now")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def read(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder, FILE)
    return json.loads(path.read_text()) if path.is_file() else None


def write(folder: str | Path, fingerprint: dict[str, Any]) -> None:
    path = Path(folder, FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=1))
    tmp.replace(path)


def check(where: str, stored: dict[str, Any] | None, current: dict[str, Any], what: str) -> None:
    """Raise ConfigError naming every difference between `stored` (read from `where`) and `current`."""
    if stored is None:
        raise ConfigError(f"{where} has no {FILE}, so it cannot be checked to belong to this run; "
                          "set train.resume_check: false to resume it anyway")
    diff = differences(stored, current)
    if diff:
        raise ConfigError(
            f"{where} {what} of another run; it differs in:\n  " + "\n  ".join(diff)
            + "\nUse another train.output_dir for this run (e.g. with {mode} in it), or set "
            "train.resume_check: false to resume it anyway"
        )
