"""The aiohttp application: middlewares (errors as JSON, TCP bearer auth, metrics), the read-only routes
and ``ROUTES``, the one table of every route from which both the router and /openapi.json are built.

The chat routes live in chat_api.py (and vendor_api.py). Requests over the Unix socket are local whatever their Host
header says (aiohttp does not check Host; nothing here does either); requests over TCP need the
bearer token except for /health.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import time
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.errors import ApplianceError, ModelNotFound
from appliance.models.loader import LoadedModel
from appliance.service import admin_api, chat_api, ollama_api, vendor_api
from appliance.service.http_errors import HttpError, error_response
from appliance.service.metrics import CONTENT_TYPE_LATEST
from appliance.service.model_info import installed_besides
from appliance.service.openapi import ERRORS, Handler, Reply, Route, openapi_document
from appliance.service.request_origin import over_tcp
from appliance.service.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorBody,
    HealthBody,
    OllamaChatChunk,
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaModelRequest,
    OllamaPullRequest,
)
from appliance.service.state import STATE, ServiceState
from appliance.versions import versions

__all__ = ["ROUTES", "create_app"]

log = logging.getLogger(__name__)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApplianceError as err:
        status = err.http_status
        return error_response(err, request, retry_after=state.config.scheduler.retry_after_s)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        limit = state.config.server.max_body_bytes
        return error_response(
            HttpError(
                413,
                "body_too_large",
                f"the request body is larger than {limit} bytes",
                "send a shorter conversation or raise server.max_body_bytes",
            ),
            request,
        )
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        text = {404: f"no route {request.path}", 405: f"{request.method} is not allowed on {request.path}"}
        message = text.get(exc.status, exc.reason)
        return error_response(
            HttpError(
                exc.status, exc.reason.lower().replace(" ", "_"), message, "see GET /openapi.json for the API"
            ),
            request,
        )
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(
            HttpError(
                500, "internal_error", "internal error in the service; see its log", "journalctl -u llm-tpu"
            ),
            request,
        )
    finally:
        state.metrics.requests.labels(route, str(status)).inc()


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if over_tcp(request) and request.path != "/health":
        token = request.app[STATE].tcp_token
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if (
            not token
            or scheme.lower() != "bearer"
            # aiohttp hands undecodable header bytes over as surrogates: compare the bytes as sent
            or not hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode())
        ):
            err = HttpError(
                401,
                "unauthorized",
                "a valid bearer token is required over TCP",
                "send 'Authorization: Bearer <token>' with the token from server.tcp.token_file",
            )
            resp = error_response(err, request)
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.phase == "ready":
        return web.json_response({"status": "ok"})
    body: dict[str, Any] = {"status": state.phase}
    if state.failure is not None:
        body["reason"] = state.failure.message
        if state.failure.hint:
            body["hint"] = state.failure.hint
    elif state.phase == "loading":
        body["reason"] = f"loading model {state.config.model.ref!r}"
    else:
        body["reason"] = "the service is stopping"
    return web.json_response(
        body, status=503, headers={"Retry-After": str(state.config.scheduler.retry_after_s)}
    )


async def status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    m = state.model
    model: dict[str, Any] = {"ref": state.config.model.ref, "engine": state.config.model.engine}
    if m is not None:
        info = m.engine.info
        model.update(
            name=m.name,
            engine=info.kind,
            engine_details=info.details,
            max_seq_len=m.engine.limits.max_seq_len,
            load_seconds=round(m.load_duration_ns / 1e9, 3),
            sampling=_sampling(m, state),
            **{k: v for k, v in m.details.items() if k != "max_seq_len"},
        )
    sched = state.scheduler
    body = {
        "status": state.phase,
        "error": state.failure.to_dict() if state.failure else None,
        "model": model,
        "queue": {"running": int(sched.busy), "waiting": sched.queue_depth, "size": sched.queue_size},
        "uptime_s": round(time.monotonic() - state.started, 3),
        "pid": os.getpid(),
        "socket": str(state.socket_path) if state.socket_path else None,
        "tcp": state.config.server.tcp.enabled,
        "versions": versions(),
        "tpu": state.device_probe(),
    }
    return web.json_response(body)


def _sampling(m: LoadedModel, state: ServiceState) -> dict[str, Any]:
    """The options a request that sets none gets, and whether sampling options can change anything."""
    greedy_only = m.engine.capabilities.greedy_only
    return {
        "greedy_only": greedy_only,
        "note": "this model's bmodel has a fused greedy head: answers are greedy whatever the options say"
        if greedy_only
        else None,
        "defaults": m.defaults(state.config.generation).as_ollama(),
    }


def _openai_models(state: ServiceState) -> list[dict[str, Any]]:
    """The loaded model, then (unless model.pinned) the installed ones a request may name."""
    entries = []
    served = state.model
    if served is not None:
        entries.append({"id": served.name, "created": int(state.started_wall)})
    if not state.config.model.pinned:
        entries += [{"id": m.name, "created": int(m.path.stat().st_mtime)} for m in installed_besides(served)]
    return [{**e, "object": "model", "owned_by": "llm-tpu"} for e in entries]


async def v1_models(request: web.Request) -> web.Response:
    entries = await asyncio.to_thread(_openai_models, request.app[STATE])
    return web.json_response({"object": "list", "data": entries})


async def v1_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    wanted = request.match_info["model"]
    served = state.model
    if served is not None and wanted and served.answers_to(wanted):
        wanted = served.name
    for entry in await asyncio.to_thread(_openai_models, state):
        if entry["id"] == wanted:
            return web.json_response(entry)
    hint = "GET /v1/models lists the models a request may name"
    raise ModelNotFound(f"model {wanted!r} is not served here", hint=hint)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@functools.cache
def _openapi_text() -> str:
    return json.dumps(openapi_document(__version__, ROUTES))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_openapi_text(), content_type="application/json")


_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"

# Every route, declared once: the router below and /openapi.json are both built from this list.
ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/chat",
        chat_api.ollama_chat,
        "Chat, Ollama shape: NDJSON chunks, the last with done_reason and durations (ns)",
        request=OllamaChatRequest,
        responses={
            "200": Reply(
                "stream=true: one OllamaChatChunk per line; stream=false: one final chunk",
                {_NDJSON: OllamaChatChunk},
            ),
            **ERRORS,
        },
    ),
    Route(
        "POST",
        "/v1/chat/completions",
        chat_api.openai_chat,
        "Chat, OpenAI shape: SSE chunks ending in 'data: [DONE]', or one completion",
        request=ChatCompletionRequest,
        responses={
            "200": Reply(
                "stream=false: ChatCompletion; stream=true: text/event-stream of chunks",
                {"application/json": ChatCompletion, _SSE: ChatCompletionChunk},
            ),
            **ERRORS,
        },
    ),
    Route(
        "POST",
        "/chat/completions",
        vendor_api.vendor_chat,
        "the vendor Qwen-TPU demo's shape: {question, history: [user, assistant, ...], stream}",
        responses={
            "200": Reply(
                'stream=false: {"data": answer}; stream=true: text/event-stream whose data is the answer so far'
            ),
            **ERRORS,
        },
    ),
    Route(
        "POST",
        "/api/generate",
        ollama_api.api_generate,
        "Completion, Ollama shape: the prompt as one user turn (or as is with raw=true); NDJSON like /api/chat",
        request=OllamaGenerateRequest,
        responses={
            "200": Reply("stream=true: one record per line, 'response' holds the text; stream=false: one"),
            **ERRORS,
        },
    ),
    Route(
        "POST",
        "/v1/completions",
        chat_api.openai_completions,
        "Text completion, OpenAI shape: the prompt as is (no chat template), text out; SSE when streaming",
        request=CompletionRequest,
        responses={
            "200": Reply(
                "stream=false: Completion; stream=true: text/event-stream of Completion chunks",
                {"application/json": Completion, _SSE: Completion},
            ),
            **ERRORS,
        },
    ),
    Route("GET", "/v1/models", v1_models, "OpenAI model list: the loaded model, then the installed ones"),
    Route(
        "GET",
        "/v1/models/{model}",
        v1_model,
        "OpenAI model record of a model /v1/models lists; 404 for others",
    ),
    Route("GET", "/api/tags", ollama_api.api_tags, "Ollama model list: the loaded model, then the installed"),
    Route("GET", "/api/ps", ollama_api.api_ps, "Ollama running models, with size_vram (TPU memory)"),
    Route(
        "POST",
        "/api/show",
        ollama_api.api_show,
        "Ollama model details: template, parameters, model_info (nets, sampling, context), capabilities",
        request=OllamaModelRequest,
    ),
    Route("GET", "/api/version", ollama_api.api_version, "the appliance's version (Ollama shape)"),
    Route(
        "POST",
        "/api/embed",
        ollama_api.api_embed,
        "always 501: no served model produces embeddings",
        responses={"501": Reply("not supported", {"application/json": ErrorBody})},
    ),
    Route(
        "POST",
        "/api/pull",
        admin_api.api_pull,
        "admin: install a model (catalog name, URL, dfss path, local .bmodel or directory); TCP needs "
        "server.tcp.admin_api",
        request=OllamaPullRequest,
        responses={"200": Reply("status lines (NDJSON) or one status"), **ERRORS},
    ),
    Route(
        "DELETE",
        "/api/delete",
        admin_api.api_delete,
        "admin: delete an installed model (not the loaded one); TCP needs server.tcp.admin_api",
        request=OllamaModelRequest,
        responses={"200": Reply("removed"), **ERRORS},
    ),
    Route("GET", "/api/status", status, "model, engine, versions, TPU devices and memory, queue, uptime"),
    Route(
        "GET",
        "/health",
        health,
        "200 when the model is loaded; 503 with a reason while loading, failed or stopping",
        responses={
            "200": Reply("ready", {"application/json": HealthBody}),
            "503": Reply("not ready; see reason and Retry-After", {"application/json": HealthBody}),
        },
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        responses={"200": Reply("OK", {"text/plain": {"type": "string"}})},
    ),
    Route("GET", "/openapi.json", openapi, "this document"),
)


def create_app(state: ServiceState) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth], client_max_size=state.config.server.max_body_bytes)
    app[STATE] = state
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app
