"""Wire schemas of the service (pydantic, the HTTP boundary) and their mapping to generation options.

Requests are strict about what they accept: a sampling parameter we cannot honour is an error that
says so, never silently ignored (the vendor's server ignored them all). Response models document the
shapes for /openapi.json and let tests check real responses against them; the handlers build the same
shapes as plain dicts on the hot path.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from appliance.errors import InvalidRequest
from appliance.generation.types import GenerationOptions, Message, options_with_defaults, validate_messages

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ErrorBody",
    "HealthBody",
    "OllamaChatChunk",
    "OllamaChatRequest",
    "OllamaOptions",
    "parse_request",
]

_RequestT = TypeVar("_RequestT", bound=BaseModel)
UNLIMITED_TOKENS = 1_000_000  # num_predict -1/-2: run until a stop or the context is full


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- Ollama ------------------------------------------------------------------------------------
class OllamaMessage(_Request):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class OllamaOptions(_Request):
    """Sampling options we honour; any other Ollama option is rejected by name."""

    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)
    repeat_last_n: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: list[str] | None = None
    num_predict: int | None = Field(None, ge=-2)


class OllamaChatRequest(_Request):
    model: str = ""
    messages: list[OllamaMessage]
    stream: bool = True
    options: OllamaOptions | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: float | str | None = None  # the one model stays loaded; accepted for compatibility
    tools: list[dict[str, Any]] | None = None
    think: bool | str | None = None

    def check_supported(self) -> None:
        for i, m in enumerate(self.messages):
            if m.images:
                raise InvalidRequest(f"messages[{i}].images: this model takes text only")
        if self.format not in (None, ""):
            raise InvalidRequest("format: structured (JSON) output is not supported", hint="omit 'format'")
        if self.tools:
            raise InvalidRequest(
                "tools: tool calling is not supported by this appliance", hint="omit 'tools'"
            )
        if self.think not in (None, False):
            raise InvalidRequest("think: thinking mode is not supported", hint="omit 'think'")

    def to_options(self, defaults: GenerationOptions) -> GenerationOptions:
        o = self.options or OllamaOptions.model_validate({})
        max_tokens = o.num_predict
        if max_tokens is not None and max_tokens < 0:
            max_tokens = UNLIMITED_TOKENS
        if max_tokens == 0:
            raise InvalidRequest("options.num_predict must not be 0", hint="use -1 for no limit, or >= 1")
        return options_with_defaults(
            defaults,
            max_tokens=max_tokens,
            temperature=o.temperature,
            top_k=o.top_k,
            top_p=o.top_p,
            repetition_penalty=o.repeat_penalty,
            repeat_last_n=o.repeat_last_n,
            seed=o.seed,
            stop=o.stop,
        )

    def to_messages(self) -> list[Message]:
        return validate_messages([{"role": m.role, "content": m.content} for m in self.messages])


class OllamaChatChunk(BaseModel):
    """One NDJSON line of /api/chat; the last has done=true, done_reason and durations in ns."""

    model: str
    created_at: str
    message: dict[str, str]
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    prompt_tokens: int | None = Field(None, description="extension: the whole prompt, reused prefix included")
    reused_tokens: int | None = Field(None, description="extension: prompt tokens served from the KV cache")
    time_to_first_token: int | None = Field(None, description="extension: ns from request to first token")
    dropped_turns: int | None = Field(None, description="extension: oldest turns dropped to fit the context")


# -- OpenAI ------------------------------------------------------------------------------------
class ContentPart(_Request):
    type: str
    text: str | None = None


class OpenAIMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"messages[{index}].content[{j}] has type {part.type!r}; only text parts are supported"
                )
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: str = ""
    messages: list[OpenAIMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="extension (vLLM): top-k sampling")
    repetition_penalty: float | None = Field(None, gt=0, description="extension (vLLM): repetition penalty")
    repeat_last_n: int | None = Field(None, ge=0, description="extension: window of the penalty")
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None  # an end-user id for abuse tracking; not a generation parameter

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("at most 16 stop strings")
        return value

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise InvalidRequest(f"n={self.n}: only one choice per request is supported", hint="omit 'n'")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise InvalidRequest(
                    f"{name} is not supported", hint="use 'repetition_penalty' (e.g. 1.1) instead"
                )
        if self.logprobs or self.top_logprobs:
            raise InvalidRequest("logprobs are not supported", hint="omit 'logprobs'")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise InvalidRequest("response_format: only 'text' is supported", hint="omit 'response_format'")
        if self.tools or self.tool_choice not in (None, "none"):
            raise InvalidRequest(
                "tools: tool calling is not supported by this appliance", hint="omit 'tools'"
            )

    def to_options(self, defaults: GenerationOptions) -> GenerationOptions:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return options_with_defaults(
            defaults,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            repeat_last_n=self.repeat_last_n,
            seed=self.seed,
            stop=stop,
        )

    def to_messages(self) -> list[Message]:
        raw = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text(i)}
            for i, m in enumerate(self.messages)
        ]
        return validate_messages(raw)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None  # cached_tokens: prompt served from the KV cache


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage | None = None


# -- common ------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    error: str | dict[str, Any]
    code: str | None = None
    hint: str | None = None


class HealthBody(BaseModel):
    status: Literal["ok", "loading", "failed", "stopping"]
    reason: str | None = None
    hint: str | None = None


def parse_request(model: type[_RequestT], data: Any) -> _RequestT:
    """Validate a decoded JSON body; InvalidRequest names each bad field and why."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(p) for p in item["loc"]) or "body"
            reason = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
            problems.append(f"{where}: {reason}")
        hint = None
        if any(
            item["type"] == "extra_forbidden" and item["loc"][:1] == ("options",) for item in exc.errors()
        ):
            hint = "supported options: " + ", ".join(OllamaOptions.model_fields)
        raise InvalidRequest("invalid request: " + "; ".join(problems), hint=hint) from None
