"""The native backend: a Hugging Face causal LM run in this process by our scheduler (the reference).

`NativeEngine(model, tokenizer, device, threads, **engine_options)` loads the model (a local path) or takes loaded
objects, sets torch's intra-op threads as the commands do (`threads`, else one for a model under 50M
parameters), builds the KV pool and the ModelRunner, and is a Driver (engine/driver.py): submit / step / abort /
generate / stream. Fault isolation: an exception caused by one request inside a step (its logits processor,
its sampling, its stop check, its sink, its fork) finishes THAT request with finish_reason "error" and frees
its pages; every other request of the step continues and writes the tokens it would have written alone. Only a
failing forward is engine-wide: the step's requests end with "error" and step() raises `EngineError`; no page
stays allocated and the engine can be stepped again.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from engine.config import EngineConfig
from engine.detok import TextCodec
from engine.driver import Driver, eos_ids
from engine.kv_memory import kv_shape, plan_kv
from engine.kv_pool import KVPool
from engine.runner import ModelRunner
from engine.scheduler import Scheduler
from multiverse import threads as multiverse_threads
from multiverse.tags import StructureVocab

log = logging.getLogger("multiverse.engine")


class NativeEngine(Driver):
    def __init__(
        self, model: Any, tokenizer: Any = None, device: str | torch.device | None = None, threads: int | None = None,
        **engine_options: Any,
    ) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: an integer >= 1 or None, got {threads!r}")
        model, tokenizer = _load(model, tokenizer)
        # the commands' rule (multiverse/threads.py): one intra-op thread for a tiny model unless threads says
        multiverse_threads.apply(threads, sum(p.numel() for p in model.parameters()))
        config = EngineConfig.from_options(device=str(device) if device is not None else None, **engine_options)
        self.device = torch.device(config.device) if config.device else next(model.parameters()).device
        config = config.for_device(self.device)  # the step budget of this device unless one was given
        self.max_positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self.model = model.to(self.device).eval()
        if config.dtype is not None:
            self.model.to(config.dtype)
        vocab = StructureVocab.from_tokenizer(tokenizer)
        dtype = next(self.model.parameters()).dtype
        self.kv = plan_kv(self.model.config, dtype, config, self.device)  # the weights are in place: measure now
        self.pool = KVPool(*kv_shape(self.model.config), self.kv.num_pages, self.kv.page_size, dtype, self.device)
        log.info("%s", self.kv.describe())  # the start-up line
        codec = TextCodec(tokenizer, keep=vocab.tags.all())  # raw and clean text, incremental decoding
        eos = eos_ids(tokenizer, getattr(model, "generation_config", None))
        runner = ModelRunner(self.model, self.pool, self.device, config.shared_prefix_slots)
        scheduler = Scheduler(runner, self.pool, config, vocab, eos, codec, self.max_positions)
        super().__init__(tokenizer, config, vocab, codec, scheduler)


def _load(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    if isinstance(model, (str, Path)):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(model)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    elif model is None:
        raise ValueError("MultiverseLM(model): pass a model path (or a loaded model with its tokenizer)")
    elif tokenizer is None:
        raise ValueError("MultiverseLM(model, tokenizer): pass the tokenizer along with an already-loaded model")
    return model, tokenizer


__all__ = ["NativeEngine"]
