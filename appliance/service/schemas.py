"""Wire schemas of the service (pydantic, the HTTP boundary) and their mapping to generation options.

Requests are strict about what they accept: a sampling parameter we cannot honour is an error that
says so, never silently ignored (the vendor's server ignored them all). Response models document the
shapes for /openapi.json and let tests check real responses against them; the handlers build the same
shapes as plain dicts on the hot path.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from appliance.errors import InvalidRequest
from appliance.generation.structured import ANY_JSON_OBJECT, schema_text
from appliance.generation.types import (
    GenerationOptions,
    Message,
    ToolCall,
    options_with_defaults,
    validate_messages,
)

__all__ = [
    "OPENAI_IGNORED_FIELDS",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "Completion",
    "CompletionRequest",
    "ErrorBody",
    "HealthBody",
    "OllamaChatChunk",
    "OllamaChatRequest",
    "OllamaGenerateRequest",
    "OllamaModelRequest",
    "OllamaOptions",
    "OllamaPullRequest",
    "parse_request",
]

_RequestT = TypeVar("_RequestT", bound=BaseModel)
UNLIMITED_TOKENS = 1_000_000  # num_predict -1/-2: run until a stop or the context is full


class _Request(BaseModel):
    # NaN and Infinity are not numbers a sampler can use (json.loads accepts them; read_json refuses them)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- Ollama ------------------------------------------------------------------------------------
def _tools_text(tools: list[dict[str, Any]] | None, where: str) -> str | None:
    """OpenAI-shaped function tools ({"type": "function", "function": {"name": ...}}) as JSON text."""
    if not tools:
        return None
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                f"{where}[{i}] is not a function tool", hint='send {"type": "function", "function": {...}}'
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"{where}[{i}].function.name is missing")
    return json.dumps(tools, ensure_ascii=False)


def _tool_calls(raw: list[dict[str, Any]] | None, where: str) -> tuple[ToolCall, ...]:
    """Calls an assistant message made, as either API sends them back (arguments an object or JSON text)."""
    calls = []
    for i, item in enumerate(raw or ()):
        function = item.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{where}[{i}].function.name is missing")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                raise InvalidRequest(f"{where}[{i}].function.arguments is not JSON") from None
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"{where}[{i}].function.arguments must be an object")
        calls.append(ToolCall(function["name"], json.dumps(arguments, ensure_ascii=False)))
    return tuple(calls)


class OllamaMessage(_Request):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = Field(None, description="a tool result's tool (accepted; the template places it)")


class OllamaOptions(_Request):
    """Sampling options we honour; any other Ollama option is rejected by name."""

    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)
    repeat_last_n: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0)
    stop: list[str] | None = None
    num_predict: int | None = Field(None, ge=-2)
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="host sampler only (logits)")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="host sampler only (logits)")

    def to_options(
        self, defaults: GenerationOptions, *, raw_prompt: bool = False, response_schema: str | None = None
    ) -> GenerationOptions:
        max_tokens = self.num_predict
        if max_tokens is not None and max_tokens < 0:
            max_tokens = UNLIMITED_TOKENS
        if max_tokens == 0:
            raise InvalidRequest("options.num_predict must not be 0", hint="use -1 for no limit, or >= 1")
        return options_with_defaults(
            defaults,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            seed=self.seed,
            stop=self.stop,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            raw_prompt=raw_prompt,
            response_schema=response_schema,
        )


KeepAlive = float | str | None  # seconds, or a duration ("5m", "1h30m"); 0 unloads now, negative never


def _ollama_schema(fmt: str | dict[str, Any] | None) -> str | None:
    """Ollama's ``format``: "json" (any JSON object) or a JSON schema, as GenerationOptions.response_schema."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return ANY_JSON_OBJECT
    if isinstance(fmt, dict):
        return schema_text(fmt, "format")
    raise InvalidRequest(f"format is {fmt!r}", hint='send "json" or a JSON schema object')


def _refuse_think(req: OllamaChatRequest | OllamaGenerateRequest) -> None:
    if req.think not in (None, False):
        raise InvalidRequest("think: thinking mode is not supported", hint="omit 'think'")


class OllamaChatRequest(_Request):
    model: str = ""
    messages: list[OllamaMessage]
    stream: bool = True
    options: OllamaOptions | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    tools: list[dict[str, Any]] | None = None
    think: bool | str | None = None

    def check_supported(self) -> None:
        for i, m in enumerate(self.messages):
            if m.images:
                raise InvalidRequest(f"messages[{i}].images: this model takes text only")
        _refuse_think(self)
        _ollama_schema(self.format)
        _tools_text(self.tools, "tools")

    def to_options(self, defaults: GenerationOptions) -> GenerationOptions:
        opts = self.options or OllamaOptions.model_validate({})
        options = opts.to_options(defaults, response_schema=_ollama_schema(self.format))
        return dataclasses.replace(options, tools=_tools_text(self.tools, "tools"))

    def to_messages(self) -> list[Message]:
        return validate_messages(
            [
                Message(m.role, m.content, _tool_calls(m.tool_calls, f"messages[{i}].tool_calls"))  # type: ignore[arg-type]
                if m.role in ("system", "user", "assistant", "tool")
                else {"role": m.role, "content": m.content}
                for i, m in enumerate(self.messages)
            ]
        )


class OllamaGenerateRequest(_Request):
    """/api/generate. ``context`` (the token ids a previous answer returned) is accepted and ignored:
    the service keeps the KV cache of the last prompt and reuses its prefix by itself."""

    model: str = ""
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    options: OllamaOptions | None = None
    context: list[int] | None = Field(None, description="accepted and ignored (prefix reuse is automatic)")
    keep_alive: KeepAlive = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None
    suffix: str | None = None
    template: str | None = None
    images: list[str] | None = None

    def check_supported(self) -> None:
        _refuse_think(self)
        _ollama_schema(self.format)
        if self.images:
            raise InvalidRequest("images: this model takes text only", hint="omit 'images'")
        if self.suffix:
            raise InvalidRequest("suffix: fill-in-the-middle is not supported", hint="omit 'suffix'")
        if self.template:
            raise InvalidRequest(
                "template: a per-request prompt template is not supported",
                hint="omit 'template' (the model's own chat template is used), or send raw=true",
            )
        if self.raw and self.system:
            raise InvalidRequest("system: a raw prompt has no template to put it in", hint="omit one of them")

    def to_options(self, defaults: GenerationOptions) -> GenerationOptions:
        opts = self.options or OllamaOptions.model_validate({})
        return opts.to_options(defaults, raw_prompt=self.raw, response_schema=_ollama_schema(self.format))

    def to_messages(self) -> list[Message]:
        if self.raw:
            return [Message("user", self.prompt)]
        system = [{"role": "system", "content": self.system}] if self.system else []
        return validate_messages([*system, {"role": "user", "content": self.prompt}])


class OllamaModelRequest(_Request):
    """/api/show and /api/delete: ``model`` (``name`` is the older spelling)."""

    model: str = ""
    name: str = ""
    verbose: bool = False

    @property
    def ref(self) -> str:
        ref = self.model or self.name
        if not ref:
            raise InvalidRequest("model is missing", hint="name a model, as /api/tags lists them")
        return ref


class OllamaPullRequest(OllamaModelRequest):
    """/api/pull: what `llm-tpu models pull` takes (catalog name, URL, dfss path) or a local model path."""

    stream: bool = True
    insecure: bool = Field(False, description="accepted and ignored (downloads check their sha256)")
    tokenizer: str | None = Field(None, description="extension: tokenizer for a bare .bmodel")
    sha256: str | None = Field(None, description="extension: expected sha256 of the weights")
    install_as: str | None = Field(None, description="extension: the name to install under")


class OllamaChatChunk(BaseModel):
    """One NDJSON line of /api/chat; the last has done=true, done_reason and durations in ns."""

    model: str
    created_at: str
    message: dict[str, Any]  # role, content, and tool_calls when the model called tools
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
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(
        None, description="a tool result's call (accepted; results follow calls in order)"
    )

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


# Fields every OpenAI-compatible server accepts that change nothing about a local generation.
OPENAI_IGNORED_FIELDS = (
    "store",
    "metadata",
    "user",
    "parallel_tool_calls",
    "service_tier",
    "prompt_cache_key",
    "reasoning_effort",
    "modalities",
    "verbosity",
)


class _OpenAIRequest(_Request):
    """The OpenAI fields that are accepted and ignored (OPENAI_IGNORED_FIELDS), and the sampling shared by
    /v1/chat/completions and /v1/completions."""

    store: bool | None = Field(None, description="accepted and ignored")
    metadata: dict[str, Any] | None = Field(None, description="accepted and ignored")
    user: str | None = Field(None, description="accepted and ignored")
    parallel_tool_calls: bool | None = Field(None, description="accepted and ignored")
    service_tier: str | None = Field(None, description="accepted and ignored")
    prompt_cache_key: str | None = Field(None, description="accepted and ignored (prefix reuse is automatic)")
    reasoning_effort: str | None = Field(None, description="accepted and ignored")
    modalities: list[str] | None = Field(None, description="accepted and ignored (text only)")
    verbosity: str | None = Field(None, description="accepted and ignored")

    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="extension (vLLM): top-k sampling")
    repetition_penalty: float | None = Field(None, gt=0, description="extension (vLLM): repetition penalty")
    repeat_last_n: int | None = Field(None, ge=0, description="extension: window of the penalty")
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: int | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="host sampler only (logits)")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="host sampler only (logits)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("at most 16 stop strings")
        return value

    def _check_common(self) -> None:
        if self.n not in (None, 1):
            raise InvalidRequest(f"n={self.n}: only one choice per request is supported", hint="omit 'n'")
        if self.modalities and set(self.modalities) - {"text"}:
            raise InvalidRequest(
                f"modalities: only 'text' is produced here, not {sorted(set(self.modalities) - {'text'})}",
                hint="omit 'modalities'",
            )

    def _options(
        self,
        defaults: GenerationOptions,
        max_tokens: int | None,
        *,
        raw_prompt: bool = False,
        response_schema: str | None = None,
        tools: str | None = None,
    ) -> GenerationOptions:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return options_with_defaults(
            defaults,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            repeat_last_n=self.repeat_last_n,
            seed=self.seed,
            stop=stop,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            raw_prompt=raw_prompt,
            response_schema=response_schema,
            tools=tools,
        )


def _openai_schema(response_format: dict[str, Any] | None) -> str | None:
    """OpenAI's ``response_format`` as GenerationOptions.response_schema: text (None), json_object (any
    JSON object) or json_schema ({"json_schema": {"name": ..., "schema": {...}, "strict": ...}})."""
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ANY_JSON_OBJECT
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "response_format.json_schema.schema is missing or not an object",
                hint='send {"type": "json_schema", "json_schema": {"name": "...", "schema": {...}}}',
            )
        return schema_text(schema, "response_format.json_schema.schema")
    raise InvalidRequest(
        f"response_format.type is {kind!r}", hint="use 'text', 'json_object' or 'json_schema'"
    )


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[OpenAIMessage]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def check_supported(self) -> None:
        self._check_common()
        if self.logprobs or self.top_logprobs:
            raise InvalidRequest("logprobs are not supported", hint="omit 'logprobs'")
        _openai_schema(self.response_format)
        if self.tool_choice not in (None, "none", "auto"):
            raise InvalidRequest(
                f"tool_choice: only 'auto' and 'none' are supported, not {self.tool_choice!r}",
                hint="omit 'tool_choice' (the model decides whether to call a tool)",
            )
        _tools_text(self.tools, "tools")

    def to_options(self, defaults: GenerationOptions) -> GenerationOptions:
        return self._options(
            defaults,
            self.max_completion_tokens or self.max_tokens,
            response_schema=_openai_schema(self.response_format),
            tools=None if self.tool_choice == "none" else _tools_text(self.tools, "tools"),
        )

    def to_messages(self) -> list[Message]:
        raw = [
            Message(
                "system" if m.role == "developer" else m.role,
                m.text(i),
                _tool_calls(m.tool_calls, f"messages[{i}].tool_calls"),
            )
            for i, m in enumerate(self.messages)
        ]
        return validate_messages(raw)


class CompletionRequest(_OpenAIRequest):
    """/v1/completions: the prompt is the model's whole input, tokenized as is (no chat template)."""

    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None
    logit_bias: dict[str, float] | None = None

    def check_supported(self) -> None:
        self._check_common()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise InvalidRequest(
                f"prompt: {len(self.prompt)} prompts in one request; one is supported",
                hint="send one string (or a list of one)",
            )
        if self.echo:
            raise InvalidRequest("echo is not supported", hint="omit 'echo' (prepend the prompt yourself)")
        if self.suffix:
            raise InvalidRequest("suffix: fill-in-the-middle is not supported", hint="omit 'suffix'")
        if self.logprobs:
            raise InvalidRequest("logprobs are not supported", hint="omit 'logprobs'")
        if self.best_of not in (None, 1):
            raise InvalidRequest(f"best_of={self.best_of}: only one candidate is generated", hint="omit it")
        if self.logit_bias:
            raise InvalidRequest("logit_bias is not supported", hint="omit 'logit_bias'")

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def to_options(self, defaults: GenerationOptions) -> GenerationOptions:
        return self._options(defaults, self.max_tokens, raw_prompt=True)

    def to_messages(self) -> list[Message]:
        return [Message("user", self.text)]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None  # cached_tokens: prompt served from the KV cache


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage | None = None


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
    status: Literal["ok", "loading", "failed", "stalled", "stopping"]
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
