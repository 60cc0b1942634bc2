"""LoRA adapters through PEFT (the `peft` extra), with the structure tags' embedding rows kept trainable.

The twelve tags are new tokens, so a frozen embedding would leave them at their initialisation: with
`model.lora.train_tag_embeddings` their rows of the input embedding (and of an untied LM head) are trained through
PEFT's trainable tokens, everything else of the base model stays frozen. At the end the adapter is saved to
`output_dir/adapter` and, with `merge_on_save`, the merged full model to `output_dir` (what `from_pretrained`
and the engine load).
"""
from __future__ import annotations

from typing import Any

from training.config import ConfigError, LoraConfig


def apply_lora(model: Any, cfg: LoraConfig, tag_ids: list[int]) -> Any:
    """A PeftModel around `model` (r > 0)."""
    try:
        import peft
    except ImportError as e:
        raise ConfigError("model.lora.r > 0 needs the peft package (pip install 'multiverse[peft]')") from e
    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    tokens: dict[str, list[int]] | None = None
    if cfg.train_tag_embeddings and tag_ids:
        tokens = {"embed_tokens": list(tag_ids)}
        if not getattr(model.config, "tie_word_embeddings", False):
            tokens["lm_head"] = list(tag_ids)
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                             task_type="CAUSAL_LM", trainable_token_indices=tokens)
    return peft.get_peft_model(model, config)


def trainable_share(model: Any) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(total, 1)


def save_lora(model: Any, output_dir: str, merge: bool, is_main: bool) -> Any:
    """Adapter to output_dir/adapter; returns the merged model to save as the full model (or None)."""
    if is_main:
        model.save_pretrained(f"{output_dir}/adapter")
    return model.merge_and_unload() if merge else None
