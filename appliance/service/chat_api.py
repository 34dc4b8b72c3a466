"""The two chat routes: Ollama's ``POST /api/chat`` (NDJSON) and OpenAI's ``POST /v1/chat/completions`` (SSE).

Both validate, queue a job on the scheduler and wait for its first event before sending headers, so
that errors found before any text (busy, context overflow, deadline in the queue) get a real HTTP
status. After that an error is sent inside the stream in the API's own error shape. When the client
goes away the handler is cancelled (the runner enables handler cancellation) and the job with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from appliance.errors import ApplianceError, InvalidRequest, ModelNotFound
from appliance.generation.types import (
    Finished,
    GenerationEvent,
    GenerationOptions,
    Message,
    Notice,
    TextDelta,
)
from appliance.service.http_errors import error_body
from appliance.service.scheduler import Job
from appliance.service.schemas import ChatCompletionRequest, OllamaChatRequest, parse_request
from appliance.service.state import STATE

__all__ = ["cancel_job", "chain", "collect", "ollama_chat", "openai_chat", "read_json", "start_job"]

_FINISH_REASON = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


async def read_json(request: web.Request) -> Any:
    """The body as JSON; InvalidRequest for bad UTF-8 or bad JSON (413 comes from aiohttp's limit)."""
    raw = await request.read()
    if not raw:
        raise InvalidRequest("the request body is empty", hint="send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid UTF-8 (bad byte at offset {exc.start})",
            hint="encode the JSON body as UTF-8",
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


async def start_job(
    request: web.Request, model_name: str, messages: list[Message], options: GenerationOptions
) -> tuple[Job, AsyncIterator[GenerationEvent], GenerationEvent, str]:
    state = request.app[STATE]
    served = state.require_model()
    if not served.answers_to(model_name):
        raise ModelNotFound(
            f"model {model_name!r} is not served here", hint=f"this appliance serves {served.name!r}"
        )
    job = state.scheduler.submit(messages, options, timeout_s=state.config.scheduler.request_timeout_s)
    events = state.scheduler.events(job)
    try:
        first = await events.__anext__()
    except BaseException:
        state.scheduler.cancel(job)
        raise
    return job, events, first, served.name


async def chain(
    first: GenerationEvent, rest: AsyncIterator[GenerationEvent]
) -> AsyncIterator[GenerationEvent]:
    yield first
    async for event in rest:
        yield event


def cancel_job(request: web.Request, job: Job) -> None:
    request.app[STATE].scheduler.cancel(job)


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# -- Ollama ------------------------------------------------------------------------------------
def _ollama_final(model: str, fin: Finished, content: str) -> dict[str, Any]:
    t = fin.timings
    return {
        "model": model,
        "created_at": _now_iso(),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": fin.done_reason,
        "total_duration": t.total_duration,
        "load_duration": t.load_duration,
        "prompt_eval_count": t.prompt_eval_count,
        "prompt_eval_duration": t.prompt_eval_duration,
        "eval_count": t.eval_count,
        "eval_duration": t.eval_duration,
        # ours, beyond Ollama's record: the whole prompt (prefix reuse included) and when text began
        "prompt_tokens": t.prompt_tokens,
        "reused_tokens": t.reused_tokens,
        "time_to_first_token": t.time_to_first_token,
        "dropped_turns": fin.dropped_turns,
    }


async def collect(first: GenerationEvent, rest: AsyncIterator[GenerationEvent]) -> tuple[Finished, list[str]]:
    """A whole answer (for stream: false): the final event and the notices on the way."""
    notices: list[str] = []
    async for event in chain(first, rest):
        if isinstance(event, Notice):
            notices.append(event.message)
        elif isinstance(event, Finished):
            return event, notices
    raise ApplianceError("the generation ended without a result")


async def ollama_chat(request: web.Request) -> web.StreamResponse:
    req = parse_request(OllamaChatRequest, await read_json(request))
    req.check_supported()
    state = request.app[STATE]
    options = req.to_options(state.require_model().defaults(state.config.generation))
    job, rest, first, name = await start_job(request, req.model, req.to_messages(), options)
    resp: web.StreamResponse | None = None
    try:
        if not req.stream:
            final, notices = await collect(first, rest)
            body = _ollama_final(name, final, final.text)
            if notices:
                body["notices"] = notices
            return web.json_response(body)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            async for event in chain(first, rest):
                if isinstance(event, TextDelta):
                    chunk: dict[str, Any] = {
                        "model": name,
                        "created_at": _now_iso(),
                        "message": {"role": "assistant", "content": event.text},
                        "eval_count": event.tokens,  # ours: tokens so far (a piece may hold several)
                        "done": False,
                    }
                elif isinstance(event, Notice):
                    chunk = {
                        "model": name,
                        "created_at": _now_iso(),
                        "message": {"role": "assistant", "content": ""},
                        "done": False,
                        "notice": event.message,
                    }
                else:
                    chunk = _ollama_final(name, event, "")
                await resp.write(json.dumps(chunk).encode() + b"\n")
        except ApplianceError as err:
            await resp.write(json.dumps(error_body(err, openai=False)).encode() + b"\n")
        await resp.write_eof()
        return resp
    except ConnectionResetError:  # the client left mid-stream: nothing to tell it; the job stops below
        return resp if resp is not None else web.Response(status=499)
    finally:
        cancel_job(request, job)


# -- OpenAI ------------------------------------------------------------------------------------
def _usage(fin: Finished) -> dict[str, Any]:
    t = fin.timings
    return {
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.eval_count,
        "total_tokens": t.prompt_tokens + t.eval_count,
        "prompt_tokens_details": {"cached_tokens": t.reused_tokens},
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def openai_chat(request: web.Request) -> web.StreamResponse:
    req = parse_request(ChatCompletionRequest, await read_json(request))
    req.check_supported()
    state = request.app[STATE]
    options = req.to_options(state.require_model().defaults(state.config.generation))
    job, rest, first, name = await start_job(request, req.model, req.to_messages(), options)
    ident, created = f"chatcmpl-{job.id}", int(time.time())
    resp: web.StreamResponse | None = None
    try:
        if not req.stream:
            final, notices = await collect(first, rest)
            body: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": final.text},
                        "finish_reason": _FINISH_REASON[final.done_reason],
                    }
                ],
                "usage": _usage(final),
            }
            if notices:
                body["notices"] = notices
            return web.json_response(body)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name}

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

        await resp.write(chunk({"role": "assistant", "content": ""}))
        try:
            async for event in chain(first, rest):
                if isinstance(event, TextDelta):
                    await resp.write(chunk({"content": event.text}))
                elif isinstance(event, Notice):
                    await resp.write(chunk({}, notice=event.message))
                else:
                    await resp.write(chunk({}, _FINISH_REASON[event.done_reason]))
                    if include_usage:
                        await resp.write(_sse({**base, "choices": [], "usage": _usage(event)}))
        except ApplianceError as err:
            await resp.write(_sse(error_body(err, openai=True)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    except ConnectionResetError:  # the client left mid-stream: nothing to tell it; the job stops below
        return resp if resp is not None else web.Response(status=499)
    finally:
        cancel_job(request, job)
