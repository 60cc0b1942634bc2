"""The body of SGLang's native `/generate` (the subset this server honours), as pydantic models.

Field names, defaults and shapes follow SGLang 0.5.23's `GenerateReqInput` and `SamplingParams`: one input or
a batch (`text: list[str]` / `input_ids: list[list[int]]`), `sampling_params` one dict for all or one per
input, `return_logprob` likewise. Sampling keys this engine cannot honour are accepted at their neutral
value only (`ebnf` and `logit_bias` are honoured: engine/server/constraints.py); an unknown sampling key is a 400 naming it (as SGLang refuses it too).
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.server.protocol import INT64_MAX, Count, Finite, TokenId, check_stops, stop_tuple

_NEUTRAL = {"min_new_tokens": 0, "min_p": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
            "repetition_penalty": 1.0, "n": 1}


class GenerateSampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: Count | None = 128
    temperature: Annotated[Finite, Field(ge=0)] = 1.0
    top_p: Annotated[Finite, Field(gt=0, le=1)] = 1.0
    top_k: int = -1  # -1: whole vocabulary
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True  # accepted; the tokenizer's own decoding decides
    no_stop_trim: bool = False
    sampling_seed: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    min_new_tokens: int = 0
    min_p: Finite = 0.0
    frequency_penalty: Finite = 0.0
    presence_penalty: Finite = 0.0
    repetition_penalty: Finite = 1.0
    n: int = 1
    regex: None = None
    json_schema: None = None
    ebnf: str | None = None  # an xgrammar grammar (engine/server/constraints.py); SGLang's key
    logit_bias: dict[str, Finite] | None = None  # {"token id": bias}, added after the grammar's mask, as in SGLang
    custom_params: dict[str, Any] | None = None

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int) -> int:
        if value != -1 and not 1 <= value <= 2**31 - 1:
            raise ValueError(f"top_k must be -1 (disable) or in 1..2**31-1, got {value}")
        return value

    @field_validator(*_NEUTRAL)
    @classmethod
    def _neutral(cls, value: float, info: Any) -> float:
        if value != _NEUTRAL[info.field_name]:
            raise ValueError(f"not supported by the native engine; send {_NEUTRAL[info.field_name]} or leave it out")
        return value

    _stops = field_validator("stop")(check_stops)

    @property
    def stop_list(self) -> tuple[str, ...]:
        return stop_tuple(self.stop)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str | list[str] | None = None
    input_ids: list[TokenId] | list[list[TokenId]] | None = None
    sampling_params: GenerateSampling | list[GenerateSampling] | None = None
    return_logprob: bool | list[bool] | None = None
    return_text_in_logprobs: bool = False
    top_logprobs_num: int | list[int] | None = None
    rid: str | list[str] | None = None
    stream: bool = False

    @model_validator(mode="after")
    def _shape(self) -> "GenerateRequest":
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("give exactly one of text or input_ids")
        if self.stream:
            raise ValueError("stream: not supported on /generate here (use /v1/completions for streaming)")
        if self.top_logprobs_num not in (None, 0) and self.top_logprobs_num != [0] * self.batch_size:
            raise ValueError("top_logprobs_num: top logprobs are not supported (only the sampled token's)")
        n = self.batch_size
        for name in ("sampling_params", "return_logprob", "rid"):
            value = getattr(self, name)
            if isinstance(value, list) and (not self.is_batch or len(value) != n):
                raise ValueError(f"{name}: a list needs a batch input of the same length ({len(value)} vs {n})")
        if self.is_batch and n == 0:
            raise ValueError("the batch is empty")
        return self

    @property
    def is_batch(self) -> bool:
        if self.text is not None:
            return isinstance(self.text, list)
        return bool(self.input_ids) and isinstance(self.input_ids[0], list)

    @property
    def batch_size(self) -> int:
        items = self.text if self.text is not None else self.input_ids
        return len(items) if self.is_batch else 1

    def item(self, i: int) -> tuple[str | list[int], GenerateSampling, bool, str | None]:
        """(prompt, sampling, return_logprob, rid) of input i."""
        items = self.text if self.text is not None else self.input_ids
        prompt = items[i] if self.is_batch else items
        pick = lambda v: v[i] if isinstance(v, list) else v  # noqa: E731
        sampling = pick(self.sampling_params) or GenerateSampling()
        rid = pick(self.rid)
        if rid is not None and self.is_batch and not isinstance(self.rid, list):
            rid = f"{rid}-{i}"
        return prompt, sampling, bool(pick(self.return_logprob)), rid
