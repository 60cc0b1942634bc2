"""Request bodies of the OpenAI-compatible routes, as pydantic models: every field typed and bounded.

Unknown fields are ignored (clients send many optional ones); fields we cannot honour are accepted only at
their neutral value and otherwise rejected by name. The Multiverse extensions (`max_critical_tokens`,
`max_paths`, `max_depth`, and the decoding controls under `multiverse`) and vLLM's (`top_k`, `ignore_eos`, `stop_token_ids`, `skip_special_tokens`,
`include_stop_str_in_output`) sit beside the OpenAI fields.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INT64_MAX = 2**63 - 1
Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=2**31 - 1)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


def check_stops(value: str | list[str] | None) -> str | list[str] | None:
    if any(not s for s in ([value] if isinstance(value, str) else value or [])):
        raise ValueError("stop strings must be non-empty")
    return value


def stop_tuple(value: str | list[str] | None) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


class StreamOptions(BaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class MultiverseOptions(BaseModel):
    """The decoding controls of engine/controls.py, sent as `"multiverse": {...}` in a request body."""

    model_config = ConfigDict(extra="forbid")  # a misspelt control is an error naming it, not silently ignored

    fork_threshold: Annotated[Finite, Field(ge=0, le=1)] | None = None
    fork_bias: Finite = 0.0
    max_concurrent_paths: Count | None = None
    path_rule: Literal["factor"] | None = None
    path_factor: Annotated[Finite, Field(gt=0)] | None = None
    structure: Literal["free", "constrained"] = "free"
    merge: Literal["reuse", "refresh"] = "reuse"


class SamplingFields(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: Annotated[Finite, Field(ge=0)] | None = None
    top_p: Annotated[Finite, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1, le=2**31 - 1)] | None = None  # -1 or 0: off
    seed: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Finite = 0.0
    frequency_penalty: Finite = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True  # False: content keeps special tokens (structure tags, <|im_end|>)
    max_critical_tokens: Count | None = None
    max_paths: Count | None = None
    max_depth: Count | None = None
    multiverse: MultiverseOptions = Field(default_factory=MultiverseOptions)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("penalties are not supported; send 0 or leave it out")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    _stops = field_validator("stop")(check_stops)

    @property
    def stop_list(self) -> tuple[str, ...]:
        return stop_tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    prompt: str | list[TokenId] | list[str] | list[list[TokenId]]
    max_tokens: Count | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: Any) -> str | list[int]:
        if isinstance(value, list) and value and isinstance(value[0], (str, list)):
            if len(value) != 1:
                raise ValueError(f"only one prompt per request is supported, got {len(value)}")
            value = value[0]
        if not value:
            raise ValueError("the prompt is empty")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    @field_validator("suffix", "best_of")
    @classmethod
    def _unsupported(cls, value: Any) -> Any:
        if value not in (None, 1):
            raise ValueError("not supported")
        return value


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": self.role, "content": content}


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Any] | None = None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calls are not supported")
        return value

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
