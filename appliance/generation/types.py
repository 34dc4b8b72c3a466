"""Value types of the generation loop: messages, options, streamed events, timings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.config.schema import GenerationDefaults
from appliance.errors import InvalidRequest

__all__ = [
    "OLLAMA_NAMES",
    "DoneReason",
    "Finished",
    "GenerationEvent",
    "GenerationOptions",
    "Message",
    "Notice",
    "TextDelta",
    "Timings",
    "ToolCall",
    "ollama_options",
    "options_with_defaults",
    "validate_messages",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

# "stop": a stop id or stop string; "length": max_new_tokens; "context": the model's context is full;
# "cancelled": the caller cancelled (client gone, deadline).
DoneReason = Literal["stop", "length", "context", "cancelled"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made: its name and its arguments as JSON text (an object)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls (a history sent back with results)


def validate_messages(raw: Sequence[Mapping[str, Any] | Message]) -> list[Message]:
    """Check a chat history and return it as Messages; InvalidRequest says what is wrong.

    This is the one check, made where a history enters (the service's request schemas, the commands
    that read what a user typed); the generation loop takes the Messages it returns as they are.
    """
    if not raw:
        raise InvalidRequest("messages is empty", hint="send at least one message with role 'user'")
    out: list[Message] = []
    for i, m in enumerate(raw):
        role: Any
        content: Any
        calls: tuple[ToolCall, ...] = ()
        if isinstance(m, Message):
            role, content, calls = m.role, m.content, m.tool_calls
        elif isinstance(m, Mapping):
            role, content = m.get("role"), m.get("content")
        else:
            raise InvalidRequest(f"messages[{i}] is not an object with 'role' and 'content'")
        if role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role is {role!r}", hint="use one of 'system', 'user', 'assistant', 'tool'"
            )
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"messages[{i}].content contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)",
                hint="send valid Unicode text",
            ) from None
        if role == "system" and i != 0:
            raise InvalidRequest(f"messages[{i}] is a system message", hint="put the system message first")
        if calls and role != "assistant":
            raise InvalidRequest(f"messages[{i}].tool_calls: only an assistant message makes tool calls")
        out.append(Message(role, content, calls))
    if out[0].role == "tool":
        raise InvalidRequest("messages[0] is a tool result", hint="a tool result follows the call it answers")
    if out[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            f"the last message has role {out[-1].role!r}",
            hint="the last message must come from the user (or be a tool's result)",
        )
    return out


# The one source of generation defaults is the config schema's ``generation:`` section.
_DEFAULTS = GenerationDefaults.model_validate({})


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request generation settings. Defaults are the config schema's (sampling with a mild
    repetition penalty; :meth:`greedy` is one call away); a served model's own generation_config.json
    adjusts them (appliance.generation.defaults)."""

    max_new_tokens: int = _DEFAULTS.max_tokens
    temperature: float = _DEFAULTS.temperature  # 0 = greedy
    top_k: int = _DEFAULTS.top_k  # 0 = off
    top_p: float = _DEFAULTS.top_p
    repetition_penalty: float = _DEFAULTS.repetition_penalty
    repeat_last_n: int = _DEFAULTS.repeat_last_n
    seed: int | None = None
    stop: tuple[str, ...] = ()
    reserve_tokens: int | None = None  # room kept for the answer when windowing; default min(max_new, ctx/4)
    ignore_eos: bool = False  # benchmarks: run to max_new_tokens whatever the model says
    # OpenAI's additive penalties on the host sampler (0: off): presence subtracts once per id seen in the
    # answer so far, frequency once per occurrence; they need an engine that returns logits
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # the one message's content is the whole prompt, tokenized as is (no chat template): /api/generate
    # raw=true and /v1/completions
    raw_prompt: bool = False
    # structured output: the answer is JSON valid against this schema (JSON text), enforced on the logits
    # (generation.structured); needs an engine that returns logits
    response_schema: str | None = None
    # tool calling: the tools (JSON text of OpenAI-shaped function definitions) the chat template renders
    tools: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidRequest(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InvalidRequest(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise InvalidRequest(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.repeat_last_n < 0:
            raise InvalidRequest(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")
        if self.seed is not None and self.seed < 0:
            raise InvalidRequest(f"seed must be >= 0, got {self.seed}", hint="omit it for a random seed")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise InvalidRequest(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if self.reserve_tokens is not None and self.reserve_tokens < 1:
            raise InvalidRequest(f"reserve_tokens must be >= 1, got {self.reserve_tokens}")

    @property
    def has_additive_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def needs_logits(self) -> bool:
        """Options only the host sampler can honour (it sees the logits every step)."""
        return self.has_additive_penalties or self.response_schema is not None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def greedy(self) -> GenerationOptions:
        """The same options with greedy decoding (the most likely token each step, no penalty)."""
        return dataclasses.replace(self, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)

    def as_ollama(self) -> dict[str, Any]:
        """These options in the names of Ollama's ``options`` object (what /api/chat takes)."""
        return ollama_options({f: getattr(self, f) for f in OLLAMA_NAMES})


def options_with_defaults(
    defaults: GenerationOptions,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    repeat_last_n: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    raw_prompt: bool | None = None,
    response_schema: str | None = None,
    tools: str | None = None,
) -> GenerationOptions:
    """The options a request (or a command line) gave, ``defaults`` (the served model's) for the rest."""
    given: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "repeat_last_n": repeat_last_n,
        "seed": seed,
        "stop": tuple(s for s in (stop or ()) if s) or None,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
        "raw_prompt": raw_prompt,
        "response_schema": response_schema,
        "tools": tools,
    }
    # raises InvalidRequest for values out of range
    return dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})


# GenerationOptions field -> its name in Ollama's ``options`` object (the names /api/chat takes).
OLLAMA_NAMES = {
    "max_new_tokens": "num_predict",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "repetition_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "seed": "seed",
    "stop": "stop",
}


def ollama_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """Some GenerationOptions fields (by field name) as Ollama options; None values and no stops are left out."""
    return {
        OLLAMA_NAMES[k]: (list(v) if k == "stop" else v)
        for k, v in values.items()
        if v is not None and not (k == "stop" and not v)
    }


@dataclass(frozen=True)
class Timings:
    """Per-response timings in nanoseconds (Ollama's names)."""

    load_duration: int = 0
    prompt_eval_count: int = 0  # tokens actually prefilled (after prefix reuse)
    prompt_eval_duration: int = 0
    eval_count: int = 0  # generated tokens
    eval_duration: int = 0
    time_to_first_token: int = 0
    total_duration: int = 0
    prompt_tokens: int = 0  # the whole prompt, reused prefix included
    reused_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.eval_count / (self.eval_duration / 1e9) if self.eval_duration else 0.0


@dataclass(frozen=True)
class TextDelta:
    text: str
    tokens: int = 0  # tokens generated so far, this piece's included (0: not known)


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (e.g. old turns were dropped)."""

    message: str


@dataclass(frozen=True)
class Finished:
    text: str
    done_reason: DoneReason
    timings: Timings
    dropped_turns: int = 0
    token_ids: tuple[int, ...] = field(default=(), repr=False)


GenerationEvent = TextDelta | Notice | Finished
