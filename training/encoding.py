"""Examples -> token ids and labels, segment by segment.

    ids    = chat-template prefix (system, user turn, assistant header) | assistant content | end of turn
    labels = -100 ...                                                  | ids              | ids
                                               (data.loss_on_forced False: -100 where the engine forces the token)

The assistant content of a Multiverse example is `multiverse.encode.encode_trace` (canonical form, every path
starting with exactly the engine's fork prefix), followed by the encoded answer part. Autoregressive content is
encoded as plain text (its <Think> tags are still single tokens). Truncation to `block_size` really applies;
a cut inside a <Parallel> block is fine: the core's non-strict layout treats the unfinished block as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tqdm import tqdm

from multiverse.encode import encode_trace_forced
from multiverse.structure import StructureError
from training.config import ConfigError, DataConfig
from training.data import Example

IGNORE = -100
_SLOT = "\u2063MULTIVERSE_ASSISTANT_SLOT\u2063"


@dataclass
class EncodeStats:
    samples: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    skipped_bad: int = 0
    tokens: int = 0
    target_tokens: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def chat_frame(tokenizer: Any, question: str, system: str | None) -> tuple[str, str]:
    """(text before the assistant content, text after it) under the tokenizer's chat template."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": _SLOT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not isinstance(text, str) or text.count(_SLOT) != 1:
        raise ConfigError("the tokenizer's chat template does not render the assistant turn verbatim")
    before, after = text.split(_SLOT)
    return before, after


def assistant_ids(ex: Example, tokenizer: Any, answer_prefix: str) -> tuple[list[int], list[bool]]:
    """(ids, forced): forced marks the tokens the engine places itself (multiverse.encode.encode_trace_forced)."""
    if ex.kind == "multiverse":
        try:
            ids, forced = encode_trace_forced(ex.trace, tokenizer)
        except StructureError as e:
            raise ConfigError(f"{ex.origin}: malformed Multiverse trace: {e}") from e
    else:
        ids = tokenizer.encode(ex.trace, add_special_tokens=False)
        forced = [False] * len(ids)
    if ex.attempt:
        answer = tokenizer.encode(answer_prefix + ex.attempt, add_special_tokens=False)
        ids, forced = ids + answer, forced + [False] * len(answer)
    return ids, forced


def encode_example(ex: Example, tokenizer: Any, cfg: DataConfig) -> dict[str, list[int]]:
    """Untruncated {"input_ids", "labels"} of one example."""
    p = cfg.prompt
    suffix = p.multiverse_suffix if ex.kind == "multiverse" else p.autoregressive_suffix
    before, after = chat_frame(tokenizer, ex.question + suffix, p.system_prompt)
    prompt = tokenizer.encode(before, add_special_tokens=False)
    content, forced = assistant_ids(ex, tokenizer, p.answer_prefix)
    end = tokenizer.encode(after, add_special_tokens=False)
    target = content + end
    if cfg.loss_on_forced:
        labels = target
    else:  # the end of turn is never forced
        labels = [IGNORE if f else t for t, f in zip(target, forced + [False] * len(end))]
    return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + labels}


def fit(sample: dict[str, list[int]], cfg: DataConfig, stats: EncodeStats) -> dict[str, list[int]] | None:
    """Apply block_size: cut (or drop) long samples; drop samples with no target token left."""
    n = len(sample["input_ids"])
    if n > cfg.block_size:
        if cfg.truncation == "drop":
            stats.dropped_too_long += 1
            return None
        stats.truncated += 1
        sample = {k: v[: cfg.block_size] for k, v in sample.items()}
    if all(t == IGNORE for t in sample["labels"][1:]):
        stats.dropped_no_target += 1
        return None
    return sample


def encode_all(
    examples: Iterable[Example], tokenizer: Any, cfg: DataConfig, progress: bool = True
) -> tuple[list[dict[str, list[int]]], EncodeStats]:
    """Encode each distinct example once (the curriculum repeats rows), then fit every occurrence."""
    stats = EncodeStats()
    out = []
    items = list(examples)
    encoded: dict[Example, dict[str, list[int]] | ConfigError] = {}
    for ex in tqdm(items, desc="tokenising", disable=not progress, unit="row"):
        if ex not in encoded:
            try:
                encoded[ex] = encode_example(ex, tokenizer, cfg)
            except ConfigError as e:
                encoded[ex] = e
        full = encoded[ex]
        if isinstance(full, ConfigError):
            if cfg.on_bad_row == "error":
                raise full
            stats.skipped_bad += 1
            continue
        sample = fit(full, cfg, stats)
        if sample is None:
            continue
        out.append(sample)
        stats.samples += 1
        stats.tokens += len(sample["input_ids"])
        stats.target_tokens += sum(t != IGNORE for t in sample["labels"])
        stats.by_kind[ex.kind] = stats.by_kind.get(ex.kind, 0) + 1
    return out, stats
