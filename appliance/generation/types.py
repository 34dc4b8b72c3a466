"""Value types of the generation loop: messages, options, streamed events, timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.config.schema import GenerationDefaults
from appliance.errors import InvalidRequest

__all__ = [
    "DoneReason",
    "Finished",
    "GenerationEvent",
    "GenerationOptions",
    "Message",
    "Notice",
    "TextDelta",
    "Timings",
    "options_with_defaults",
    "validate_messages",
]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")

# "stop": a stop id or stop string; "length": max_new_tokens; "context": the model's context is full;
# "cancelled": the caller cancelled (client gone, deadline).
DoneReason = Literal["stop", "length", "context", "cancelled"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


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
        if isinstance(m, Message):
            role, content = m.role, m.content
        elif isinstance(m, Mapping):
            role, content = m.get("role"), m.get("content")
        else:
            raise InvalidRequest(f"messages[{i}] is not an object with 'role' and 'content'")
        if role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role is {role!r}", hint="use one of 'system', 'user', 'assistant'"
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
        out.append(Message(role, content))
    if out[-1].role != "user":
        raise InvalidRequest(
            f"the last message has role {out[-1].role!r}", hint="the last message must come from the user"
        )
    return out


# The one source of generation defaults is the config schema's ``generation:`` section.
_DEFAULTS = GenerationDefaults.model_validate({})


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request generation settings. Defaults are the config schema's (greedy unless asked)."""

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
        if self.reserve_tokens is not None and self.reserve_tokens < 1:
            raise InvalidRequest(f"reserve_tokens must be >= 1, got {self.reserve_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def options_with_defaults(
    defaults: GenerationDefaults,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    repeat_last_n: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
) -> GenerationOptions:
    """The options a request (or a command line) gave, the configured ``defaults`` for the rest."""

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return GenerationOptions(  # raises InvalidRequest for values out of range
        max_new_tokens=pick(max_tokens, defaults.max_tokens),
        temperature=pick(temperature, defaults.temperature),
        top_k=pick(top_k, defaults.top_k),
        top_p=pick(top_p, defaults.top_p),
        repetition_penalty=pick(repetition_penalty, defaults.repetition_penalty),
        repeat_last_n=pick(repeat_last_n, defaults.repeat_last_n),
        seed=seed,
        stop=tuple(s for s in (stop or ()) if s),
    )


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
