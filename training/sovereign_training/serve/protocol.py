"""Request and response bodies of the OpenAI API subset that the CPU server speaks.

Requests forbid unknown fields, as OpenAI does, so a typo is a 400 that names it rather than a
silently ignored setting. Fields that OpenAI defines but this server cannot honour are accepted
only at their neutral value.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# OpenAI allows up to four stop sequences.
MAX_STOP_SEQUENCES = 4
_SEED_MIN = -(2**63)
_SEED_MAX = 2**64 - 1


# Fields OpenAI defines that this server accepts only at their neutral (falsy) value, and how
# to send that value.
_NEUTRAL = {
    "presence_penalty": "0",
    "frequency_penalty": "0",
    "logit_bias": "{}",
    "echo": "false",
    "logprobs": "null",
    "top_logprobs": "null",
    "suffix": "null",
    "tools": "[]",
}


def neutral_only(value: Any, info: ValidationInfo) -> Any:
    """Reject any non-neutral value of a field that this server does not implement."""
    if value:
        name = info.field_name or "this field"
        raise ValueError(
            f"{name} is not supported by this server; send {_NEUTRAL.get(name, 'null')} or omit it"
        )
    return value


def only_one(value: int | None, info: ValidationInfo) -> int | None:
    """n and best_of: one choice per request is all this server makes."""
    if value is not None and value != 1:
        raise ValueError(f"only {info.field_name}=1 is supported (got {value})")
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(
        default=False, description="Send a last chunk with token usage and no choices."
    )


class _SamplingRequest(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The served model name, as listed by /v1/models.")
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="0 is greedy; default 1."
    )
    top_p: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Nucleus sampling mass; default 1."
    )
    stop: str | list[str] | None = Field(
        default=None, description="Up to 4 strings; generation ends before the first one."
    )
    n: int | None = Field(default=None, description="Only 1 is supported.")
    seed: int | None = Field(
        default=None, ge=_SEED_MIN, le=_SEED_MAX, description="Makes sampling repeatable."
    )
    stream: bool | None = Field(default=None, description="Answer with server-sent events.")
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, description="Accepted and ignored.")
    presence_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    frequency_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(default=None, description="Only {} is supported.")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None, info: ValidationInfo) -> int | None:
        return only_one(value, info)

    @field_validator("presence_penalty", "frequency_penalty", "logit_bias")
    @classmethod
    def _neutral(cls, value: Any, info: ValidationInfo) -> Any:
        return neutral_only(value, info)

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences (got {len(stops)})")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def wants_usage_chunk(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingRequest):
    """POST /v1/completions."""

    prompt: str | list[int] | list[str] | list[list[int]] = Field(
        description="One prompt: text, or token ids; a list of one of them is also accepted."
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Default 16.")
    echo: bool | None = Field(default=None, description="Only false is supported.")
    logprobs: int | None = Field(default=None, description="Not supported; omit it.")
    best_of: int | None = Field(default=None, description="Only 1 is supported.")
    suffix: str | None = Field(default=None, description="Not supported; omit it.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(
        cls, value: str | list[int] | list[str] | list[list[int]]
    ) -> str | list[int] | list[str] | list[list[int]]:
        nested = isinstance(value, list) and value and isinstance(value[0], str | list)
        if nested and len(value) != 1:
            raise ValueError(f"only one prompt per request is supported (got {len(value)})")
        if isinstance(value, list) and not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None, info: ValidationInfo) -> int | None:
        return only_one(value, info)

    @field_validator("echo", "logprobs", "suffix")
    @classmethod
    def _completion_neutral(cls, value: Any, info: ValidationInfo) -> Any:
        return neutral_only(value, info)

    def single_prompt(self) -> str | list[int]:
        """The one prompt, unwrapped from a list of one."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        first = prompt[0]
        if isinstance(first, str | list):
            return first
        return cast(list[int], prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str


class ChatMessage(BaseModel):
    # Clients send back assistant messages as they received them (with refusal, annotations,
    # ...); those extra fields carry nothing a text-only model can use.
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(
        default=None, ge=1, description="Default: what is left of the context."
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="The newer name of max_tokens."
    )
    logprobs: bool | None = Field(default=None, description="Only false is supported.")
    top_logprobs: int | None = Field(default=None, description="Not supported; omit it.")
    response_format: dict[str, Any] | None = Field(
        default=None, description='Only {"type": "text"} is supported.'
    )
    tools: list[dict[str, Any]] | None = Field(default=None, description="Not supported.")
    tool_choice: str | dict[str, Any] | None = Field(default=None, description="Only 'none'.")
    parallel_tool_calls: bool | None = None

    @field_validator("logprobs", "top_logprobs", "tools")
    @classmethod
    def _chat_neutral(cls, value: Any, info: ValidationInfo) -> Any:
        return neutral_only(value, info)

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError('only {"type": "text"} is supported')
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value is not None and value != "none":
            raise ValueError("tool calling is not supported; send 'none' or omit it")
        return value

    @model_validator(mode="after")
    def _one_token_limit(self) -> ChatCompletionRequest:
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens disagree; send one")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# --- responses -----------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sovereign-ai"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
