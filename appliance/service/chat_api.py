"""The two chat routes: Ollama's ``POST /api/chat`` (NDJSON) and OpenAI's ``POST /v1/chat/completions`` (SSE).

Both validate, queue a job on the scheduler and wait for its first event before sending headers, so
that errors found before any text (busy, context overflow, deadline in the queue) get a real HTTP
status. After that an error is sent inside the stream in the API's own error shape. When the client
goes away the handler is cancelled (the runner enables handler cancellation) and the job with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from appliance.errors import ApplianceError, ServiceStopping
from appliance.generation.tool_calls import ToolCallFilter, split_tool_calls
from appliance.generation.types import (
    Finished,
    GenerationEvent,
    GenerationOptions,
    Message,
    Notice,
    TextDelta,
    ToolCall,
)
from appliance.models.names import check_model_name
from appliance.service.http_errors import error_body
from appliance.service.json_body import decode_json_body
from appliance.service.scheduler import Job
from appliance.service.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    OllamaChatRequest,
    parse_request,
)
from appliance.service.state import STATE

__all__ = [
    "cancel_job",
    "chain",
    "chat_piece",
    "collect",
    "ollama_chat",
    "ollama_respond",
    "openai_chat",
    "openai_completions",
    "openai_respond",
    "read_json",
    "start_job",
]

_FINISH_REASON = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


async def read_json(request: web.Request) -> Any:
    """The body as JSON; InvalidRequest for bad UTF-8, bad JSON, NaN or deep nesting (json_body.py);
    413 comes from aiohttp's limit."""
    return decode_json_body(await request.read())


# The request's options, given the served model's defaults (known once the model is loaded).
OptionsFor = Callable[[GenerationOptions], GenerationOptions]


async def start_job(
    request: web.Request,
    model_name: str,
    messages: list[Message],
    options_for: OptionsFor,
    keep_alive: float | str | None = None,
) -> tuple[Job, AsyncIterator[GenerationEvent], GenerationEvent, str]:
    """Load the named model if needed (state.model_for), then queue the job with no await in between."""
    state = request.app[STATE]
    if model_name:
        check_model_name(model_name)  # a path or other non-name is a bad request, not an unknown model
    served = await state.model_for(model_name, keep_alive)
    options = options_for(served.defaults(state.config.generation))
    served.generator.refuse_unsupported(options, messages)
    served.generator.refuse_unfittable(messages, options)  # before a megabyte is tokenized
    job = state.scheduler.submit(messages, options, timeout_s=state.config.scheduler.request_timeout_s)
    events = state.scheduler.events(job)
    try:
        first = await events.__anext__()
    except StopAsyncIteration:  # the job was dropped without a word: still a clear answer, never a 500
        raise ServiceStopping("the request was cancelled before it started") from None
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
Piece = Callable[
    [str], dict[str, Any]
]  # a text piece in the route's shape: chat's message, generate's response


def chat_piece(text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}}


def _ollama_final(model: str, fin: Finished, content: str, piece: Piece = chat_piece) -> dict[str, Any]:
    t = fin.timings
    return {
        "model": model,
        "created_at": _now_iso(),
        **piece(content),
        "done": True,
        "done_reason": fin.done_reason,
        "total_duration": t.total_duration,
        "load_duration": t.load_duration,
        "prompt_eval_count": t.prompt_tokens,  # Ollama's count: the whole prompt, the cached part included
        "prompt_eval_duration": t.prompt_eval_duration,
        "eval_count": t.eval_count,
        "eval_duration": t.eval_duration,
        # ours, beyond Ollama's record: the whole prompt, the part served from the KV cache (not computed
        # again) and when text began
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
    return await ollama_respond(
        request,
        req.model,
        req.to_messages(),
        req.to_options,
        stream=req.stream,
        keep_alive=req.keep_alive,
        tools=bool(req.tools),
    )


def _ollama_message(content: str, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"function": {"name": c.name, "arguments": json.loads(c.arguments)}} for c in calls
        ]
    return {"message": message}


async def ollama_respond(
    request: web.Request,
    model: str,
    messages: list[Message],
    options_for: OptionsFor,
    *,
    stream: bool,
    piece: Piece = chat_piece,
    keep_alive: float | str | None = None,
    tools: bool = False,
) -> web.StreamResponse:
    """Run a job and answer in Ollama's shape: NDJSON lines or one final record. With ``tools`` the
    model's ``<tool_call>`` blocks become message.tool_calls (held back from the streamed content)."""
    job, rest, first, name = await start_job(request, model, messages, options_for, keep_alive)
    resp: web.StreamResponse | None = None
    calls_filter = ToolCallFilter() if tools else None
    try:
        if not stream:
            final, notices = await collect(first, rest)
            body = _ollama_final(name, final, final.text, piece)
            if tools:
                body.update(_ollama_message(*split_tool_calls(final.text)))
            if notices:
                body["notices"] = notices
            return web.json_response(body)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            async for event in chain(first, rest):
                if isinstance(event, Finished) and calls_filter is not None:
                    content, calls = calls_filter.finish()
                    if content or calls:
                        held = {"model": name, "created_at": _now_iso(), **_ollama_message(content, calls)}
                        await resp.write(json.dumps({**held, "done": False}).encode() + b"\n")
                if isinstance(event, TextDelta):
                    text = event.text if calls_filter is None else calls_filter.feed(event.text)
                    if not text:
                        continue
                    chunk: dict[str, Any] = {
                        "model": name,
                        "created_at": _now_iso(),
                        **piece(text),
                        "eval_count": event.tokens,  # ours: tokens so far (a piece may hold several)
                        "done": False,
                    }
                elif isinstance(event, Notice):
                    chunk = {
                        "model": name,
                        "created_at": _now_iso(),
                        **piece(""),
                        "done": False,
                        "notice": event.message,
                    }
                else:
                    chunk = _ollama_final(name, event, "", piece)
                await resp.write(json.dumps(chunk).encode() + b"\n")
        except ApplianceError as err:  # the last line: done, with a done_reason that says why
            last: dict[str, Any] = {
                "model": name,
                "created_at": _now_iso(),
                **piece(""),
                "done": True,
                "done_reason": err.code,
                **error_body(err, openai=False),
            }
            await resp.write(json.dumps(last).encode() + b"\n")
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
    tools = bool(req.tools) and req.tool_choice != "none"
    return await openai_respond(
        request, req, req.to_messages(), req.to_options, text_completion=False, tools=tools
    )


def _openai_calls(ident: str, calls: list[ToolCall], *, indexed: bool) -> list[dict[str, Any]]:
    return [
        {
            **({"index": i} if indexed else {}),
            "id": f"call_{ident}_{i}",
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for i, c in enumerate(calls)
    ]


async def openai_completions(request: web.Request) -> web.StreamResponse:
    """/v1/completions: the prompt as is, text out (no chat template)."""
    req = parse_request(CompletionRequest, await read_json(request))
    req.check_supported()
    return await openai_respond(request, req, req.to_messages(), req.to_options, text_completion=True)


async def openai_respond(
    request: web.Request,
    req: ChatCompletionRequest | CompletionRequest,
    messages: list[Message],
    options_for: OptionsFor,
    *,
    text_completion: bool,
    tools: bool = False,
) -> web.StreamResponse:
    """Run a job and answer in OpenAI's shape: a chat completion or a text completion, SSE or one body.
    With ``tools`` the model's ``<tool_call>`` blocks become message.tool_calls (finish_reason
    "tool_calls"), held back from the streamed content."""
    job, rest, first, name = await start_job(request, req.model, messages, options_for)
    prefix, obj = ("cmpl", "text_completion") if text_completion else ("chatcmpl", "chat.completion")
    ident, created = f"{prefix}-{job.id}", int(time.time())

    def choice(text: str | None, finish: str | None, *, role: bool = False) -> dict[str, Any]:
        if text_completion:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if role:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "finish_reason": finish}

    resp: web.StreamResponse | None = None
    try:
        if not req.stream:
            final, notices = await collect(first, rest)
            finish = _FINISH_REASON[final.done_reason]
            whole: dict[str, Any] = (
                {"index": 0, "text": final.text, "logprobs": None, "finish_reason": finish}
                if text_completion
                else {
                    "index": 0,
                    "message": {"role": "assistant", "content": final.text},
                    "finish_reason": finish,
                }
            )
            content, calls = split_tool_calls(final.text) if tools else (final.text, [])
            if calls:
                whole["message"] = {
                    "role": "assistant",
                    "content": content or None,
                    "tool_calls": _openai_calls(ident, calls, indexed=False),
                }
                whole["finish_reason"] = "tool_calls"
            body: dict[str, Any] = {
                "id": ident,
                "object": obj,
                "created": created,
                "model": name,
                "choices": [whole],
                "usage": _usage(final),
            }
            if notices:
                body["notices"] = notices
            return web.json_response(body)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {
            "id": ident,
            "object": obj if text_completion else "chat.completion.chunk",
            "created": created,
            "model": name,
        }

        def chunk(one: dict[str, Any], **extra: Any) -> bytes:
            return _sse({**base, "choices": [one], **extra})

        if not text_completion:
            await resp.write(chunk(choice("", None, role=True)))
        try:
            calls_filter = ToolCallFilter() if tools else None
            async for event in chain(first, rest):
                if isinstance(event, TextDelta):
                    text = event.text if calls_filter is None else calls_filter.feed(event.text)
                    if text:
                        await resp.write(chunk(choice(text, None)))
                elif isinstance(event, Notice):
                    await resp.write(chunk(choice(None, None), notice=event.message))
                else:
                    finish = _FINISH_REASON[event.done_reason]
                    if calls_filter is not None:
                        content, calls = calls_filter.finish()
                        if content:
                            await resp.write(chunk(choice(content, None)))
                        if calls:
                            delta = {"tool_calls": _openai_calls(ident, calls, indexed=True)}
                            await resp.write(chunk({"index": 0, "delta": delta, "finish_reason": None}))
                            finish = "tool_calls"
                    await resp.write(chunk(choice(None, finish)))
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
