"""What the sync and async clients share: request bodies, errors from responses, chunks as events.

Nothing here does I/O. Errors: the service sends ``{"error", "code", "hint"}`` (Ollama shape) or
``{"error": {"message", "code", "hint"}}`` (OpenAI shape); :func:`service_error` turns either into the
ApplianceError subclass that has that code (:func:`appliance.errors.error_class`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from appliance.errors import ApplianceError, ServiceUnavailable, error_class
from appliance.generation.types import Finished, GenerationEvent, Notice, TextDelta, Timings

__all__ = [
    "chat_payload",
    "chunk_event",
    "connect_error",
    "cut_short",
    "final_timings",
    "parse_chunk",
    "service_error",
]


def chat_payload(
    messages: Sequence[Mapping[str, str]], model: str, options: Mapping[str, Any] | None, stream: bool
) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages], "stream": stream}
    if options:
        payload["options"] = dict(options)
    return payload


def service_error(status: int, body: bytes) -> ApplianceError:
    """The error a non-200 response (or an error line inside a stream) stands for."""
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    err = data.get("error") if isinstance(data, dict) else None
    message: Any = None
    code: Any = None
    hint: Any = None
    if isinstance(err, dict):  # OpenAI shape
        message, code, hint = err.get("message"), err.get("code"), err.get("hint")
    elif isinstance(data, dict):
        message, code, hint = err, data.get("code"), data.get("hint")
    exc = error_class(str(code) if code else None)(str(message or f"HTTP {status}"), hint=hint)
    exc.http_status = status
    return exc


def parse_chunk(line: str) -> dict[str, Any] | None:
    """One NDJSON line of /api/chat (None for a blank line); an error line raises its ApplianceError."""
    if not line.strip():
        return None
    chunk = json.loads(line)
    if not isinstance(chunk, dict):
        raise ValueError(f"not a JSON object: {line[:80]!r}")
    if "error" in chunk:
        raise service_error(500, line.encode())
    return chunk


def final_timings(chunk: Mapping[str, Any]) -> Timings:
    """The final record's durations (ns) and counts as Timings (the extra fields when the service sends them)."""

    def num(key: str) -> int:
        value = chunk.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    prompt_eval = num("prompt_eval_count")  # Ollama's: the whole prompt
    reused = num("reused_tokens")  # ours: the part served from the KV cache
    return Timings(
        load_duration=num("load_duration"),
        prompt_eval_count=prompt_eval - reused if "prompt_tokens" in chunk else prompt_eval,
        prompt_eval_duration=num("prompt_eval_duration"),
        eval_count=num("eval_count"),
        eval_duration=num("eval_duration"),
        time_to_first_token=num("time_to_first_token") or num("prompt_eval_duration"),
        total_duration=num("total_duration"),
        prompt_tokens=num("prompt_tokens") or prompt_eval,
        reused_tokens=reused,
    )


def chunk_event(chunk: Mapping[str, Any], text_so_far: str) -> GenerationEvent | None:
    """A chunk as the generation event it carries (None for an empty one); the final one becomes
    Finished with the whole text (``text_so_far`` plus its own)."""
    text = str((chunk.get("message") or {}).get("content") or "")
    if chunk.get("done"):
        reason = str(chunk.get("done_reason") or "stop")
        done_reason = reason if reason in ("stop", "length", "context", "cancelled") else "stop"
        return Finished(
            text_so_far + text,
            done_reason,  # type: ignore[arg-type]
            final_timings(chunk),
            dropped_turns=int(chunk.get("dropped_turns") or 0),
        )
    if chunk.get("notice"):
        return Notice(str(chunk["notice"]))
    tokens = chunk.get("eval_count")
    return TextDelta(text, tokens if isinstance(tokens, int) else 0) if text else None


def _os_error(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def connect_error(exc: httpx.TransportError, where: str, unix: bool) -> ServiceUnavailable:
    """A failed connection as ServiceUnavailable saying why and what to do."""
    cause = _os_error(exc)
    if unix and (isinstance(cause, FileNotFoundError) or not Path(where).exists()):
        return ServiceUnavailable(
            f"no service socket at {where}", hint="start it: systemctl start llm-tpu (or llm-tpu serve)"
        )
    if unix and (isinstance(cause, PermissionError) or not os.access(where, os.R_OK | os.W_OK)):
        return ServiceUnavailable(
            f"permission denied on {where}",
            hint="add your user to the llm-tpu group (sudo adduser $USER llm-tpu) and log in again",
        )
    if isinstance(exc, httpx.ConnectError):
        return ServiceUnavailable(f"nothing is listening on {where}", hint="systemctl status llm-tpu")
    return ServiceUnavailable(
        f"the connection to the service at {where} broke: {exc or type(exc).__name__}",
        hint="the service may be restarting; try again when `llm-tpu status` answers",
    )


def cut_short(where: str, exc: Exception | None) -> ServiceUnavailable:
    """A stream that ended without its final record: the service went away mid-answer."""
    why = f" ({exc})" if exc else ""
    return ServiceUnavailable(
        f"the connection to the service at {where} broke before the answer was complete{why}",
        hint="the service may be restarting; the conversation is kept, send the next message when it is back",
    )
