"""One chat turn against the service, as a stream of plain events (no Textual here).

:func:`stream_answer` drives :meth:`AsyncServiceClient.chat_stream` (Ollama's NDJSON chunks) and turns
everything that can happen into events: text (:class:`TextDelta`, with the token count so far),
notices, :class:`AnswerDone` with the final record's timings, or one :class:`AnswerFailed` carrying an
ApplianceError. It never raises for service trouble, so the UI only has to render events. Stopping
is cancelling the task that iterates: the connection closes and the service drops the request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.client import AsyncServiceClient, chunk_event
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.generation.types import Finished, Notice, TextDelta, Timings

__all__ = ["AnswerDone", "AnswerEvent", "AnswerFailed", "TurnStats", "stream_answer"]


@dataclass(frozen=True)
class TurnStats:
    """What the status line shows about one answer."""

    done_reason: str
    timings: Timings
    client_ttft_s: float = 0.0  # request sent -> first text, measured here (includes queueing)

    @property
    def eval_count(self) -> int:
        return self.timings.eval_count

    @property
    def tokens_per_second(self) -> float:
        return self.timings.tokens_per_second

    @property
    def ttft_s(self) -> float:
        """Time to first token on the service: the prefill, which produces the first token."""
        return self.timings.time_to_first_token / 1e9


@dataclass(frozen=True)
class AnswerDone:
    final: Finished
    stats: TurnStats


@dataclass(frozen=True)
class AnswerFailed:
    """The turn ended in an error; ``mid_stream`` says whether some text had already arrived."""

    error: ApplianceError
    mid_stream: bool


AnswerEvent = TextDelta | Notice | AnswerDone | AnswerFailed


async def stream_answer(
    client: AsyncServiceClient,
    messages: Sequence[Mapping[str, str]],
    *,
    model: str = "",
    options: Mapping[str, Any] | None = None,
) -> AsyncIterator[AnswerEvent]:
    """Events of one /api/chat turn; see the module docstring. Ends after AnswerDone or AnswerFailed."""
    started = time.perf_counter()
    first_text_at: float | None = None
    text: list[str] = []
    try:
        async for chunk in client.chat_stream(messages, model=model, options=options):
            event = chunk_event(chunk, "".join(text) if chunk.get("done") else "")
            if isinstance(event, TextDelta):
                if first_text_at is None:
                    first_text_at = time.perf_counter()
                text.append(event.text)
                yield event
            elif isinstance(event, Notice):
                yield event
            elif isinstance(event, Finished):
                ttft = (first_text_at or time.perf_counter()) - started
                yield AnswerDone(event, TurnStats(event.done_reason, event.timings, ttft))
                return
    except ServiceUnavailable as err:
        if not text:
            yield AnswerFailed(err, False)
            return
        lost = ServiceUnavailable(
            "the connection to the service broke mid-answer",
            hint="the service may be restarting; the conversation is kept, send the next message when it is back",
        )
        yield AnswerFailed(lost, True)
    except ApplianceError as err:
        yield AnswerFailed(err, bool(text))
