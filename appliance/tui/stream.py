"""One chat turn against the service, as a stream of plain events (no Textual here).

:func:`stream_answer` drives :meth:`ServiceClient.chat_stream` (Ollama's NDJSON chunks) and turns
everything that can happen into events: text, notices, the final record with its timings, or one
:class:`AnswerFailed` carrying an ApplianceError. It never raises for service trouble, so the UI only
has to render events. Stopping is cooperative: ``should_stop`` is checked after each chunk and ending
the iteration closes the connection, which makes the service cancel the generation.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.service.client import Abort, ServiceClient

__all__ = [
    "AnswerDelta",
    "AnswerDone",
    "AnswerEvent",
    "AnswerFailed",
    "AnswerNotice",
    "TurnStats",
    "stream_answer",
]


@dataclass(frozen=True)
class TurnStats:
    """What the final NDJSON record says about one answer (durations in nanoseconds, as Ollama sends)."""

    done_reason: str
    eval_count: int = 0
    eval_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    total_duration: int = 0
    client_ttft_s: float = 0.0  # request sent -> first text, measured here (includes queueing)

    @property
    def tokens_per_second(self) -> float:
        return self.eval_count / (self.eval_duration / 1e9) if self.eval_duration else 0.0

    @property
    def ttft_s(self) -> float:
        """Time to first token on the service: the prefill, which produces the first token."""
        return self.prompt_eval_duration / 1e9

    @classmethod
    def from_final(cls, chunk: Mapping[str, Any], client_ttft_s: float) -> TurnStats:
        def num(key: str) -> int:
            value = chunk.get(key)
            return int(value) if isinstance(value, int | float) else 0

        return cls(
            done_reason=str(chunk.get("done_reason") or "stop"),
            eval_count=num("eval_count"),
            eval_duration=num("eval_duration"),
            prompt_eval_count=num("prompt_eval_count"),
            prompt_eval_duration=num("prompt_eval_duration"),
            total_duration=num("total_duration"),
            client_ttft_s=client_ttft_s,
        )


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class AnswerNotice:
    message: str


@dataclass(frozen=True)
class AnswerDone:
    stats: TurnStats


@dataclass(frozen=True)
class AnswerFailed:
    """The turn ended in an error; ``mid_stream`` says whether some text had already arrived."""

    error: ApplianceError
    mid_stream: bool


AnswerEvent = AnswerDelta | AnswerNotice | AnswerDone | AnswerFailed


def _lost(got_text: bool) -> ServiceUnavailable:
    return ServiceUnavailable(
        "the connection to the service broke " + ("mid-answer" if got_text else "before the answer"),
        hint="the service may be restarting; the conversation is kept, send the next message when it is back",
    )


def stream_answer(
    client: ServiceClient,
    messages: Sequence[Mapping[str, str]],
    *,
    model: str = "",
    options: Mapping[str, Any] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    abort: Abort | None = None,
) -> Iterator[AnswerEvent]:
    """Events of one /api/chat turn; see the module docstring. Ends after AnswerDone or AnswerFailed,
    or silently when ``should_stop`` turned true."""
    started = time.perf_counter()
    first_text_at: float | None = None
    got_text = False
    try:
        chunks = client.chat_stream(messages, model=model, options=options, abort=abort)
        try:
            for chunk in chunks:
                if should_stop():
                    return  # the finally closes the stream: the service cancels the generation
                if chunk.get("done"):
                    ttft = (first_text_at or time.perf_counter()) - started
                    yield AnswerDone(TurnStats.from_final(chunk, ttft))
                    return
                if chunk.get("notice"):
                    yield AnswerNotice(str(chunk["notice"]))
                text = (chunk.get("message") or {}).get("content") or ""
                if text:
                    if first_text_at is None:
                        first_text_at = time.perf_counter()
                    got_text = True
                    yield AnswerDelta(str(text))
        finally:
            close = getattr(chunks, "close", None)  # a generator: closing it closes the connection
            if close is not None:
                close()
    except ApplianceError as err:
        yield AnswerFailed(err, got_text)
        return
    except (OSError, http.client.HTTPException, ValueError):
        if should_stop() or (abort is not None and abort.requested):
            return  # we cut the connection ourselves
        # A reset socket, a chunked body cut short, or half a JSON line: the service went away.
        yield AnswerFailed(_lost(got_text), got_text)
        return
    if not should_stop() and not (abort is not None and abort.requested):
        yield AnswerFailed(_lost(got_text), got_text)  # EOF without the final record
