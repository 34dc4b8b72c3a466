"""The OpenAPI 3.1 description served at ``GET /openapi.json``, built from the wire schemas."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from appliance.service.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorBody,
    HealthBody,
    OllamaChatChunk,
    OllamaChatRequest,
)

__all__ = ["openapi_document"]

_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorBody,
    HealthBody,
    OllamaChatChunk,
    OllamaChatRequest,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("ErrorBody"), "invalid request (bad JSON, UTF-8, types, options; context overflow)"),
    "401": _json(_ref("ErrorBody"), "missing or wrong bearer token (TCP listener only)"),
    "404": _json(_ref("ErrorBody"), "the named model is not served here"),
    "413": _json(_ref("ErrorBody"), "request body larger than server.max_body_bytes"),
    "503": _json(_ref("ErrorBody"), "busy (queue full) or model not loaded; see Retry-After"),
    "504": _json(_ref("ErrorBody"), "the request's deadline passed"),
}


def _get(
    summary: str, schema: dict[str, Any] | None = None, content_type: str = "application/json"
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {content_type: {"schema": schema or {"type": "object"}}},
                }
            },
        }
    }


@functools.lru_cache(maxsize=4)
def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def openapi_document(version: str) -> dict[str, Any]:
    chat_ollama = {
        "post": {
            "summary": "Chat, Ollama shape: NDJSON chunks, the last with done_reason and durations (ns)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("OllamaChatRequest")}},
            },
            "responses": {
                "200": {
                    "description": "stream=true: one OllamaChatChunk per line; stream=false: one final chunk",
                    "content": {"application/x-ndjson": {"schema": _ref("OllamaChatChunk")}},
                },
                **_ERRORS,
            },
        }
    }
    chat_openai = {
        "post": {
            "summary": "Chat, OpenAI shape: SSE chunks ending in 'data: [DONE]', or one completion",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
            },
            "responses": {
                "200": {
                    "description": "stream=false: ChatCompletion; stream=true: text/event-stream of chunks",
                    "content": {
                        "application/json": {"schema": _ref("ChatCompletion")},
                        "text/event-stream": {"schema": _ref("ChatCompletionChunk")},
                    },
                },
                **_ERRORS,
            },
        }
    }
    vendor_chat = {
        "post": {
            "summary": "the vendor Qwen-TPU demo's shape: {question, history: [user, assistant, ...], stream}",
            "responses": {
                "200": {
                    "description": 'stream=false: {"data": answer}; stream=true: text/event-stream whose '
                    "data is the answer so far",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_ERRORS,
            },
        }
    }
    health = {
        "get": {
            "summary": "200 when the model is loaded; 503 with a reason while loading, failed or stopping",
            "responses": {
                "200": _json(_ref("HealthBody"), "ready"),
                "503": _json(_ref("HealthBody"), "not ready; see reason and Retry-After"),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llm-tpu appliance",
            "version": version,
            "description": "Chat service of the BM1684X LLM appliance. Over the Unix socket every request is "
            "local; over the optional TCP listener every route except /health needs 'Authorization: Bearer'.",
        },
        "paths": {
            "/api/chat": chat_ollama,
            "/v1/chat/completions": chat_openai,
            "/chat/completions": vendor_chat,
            "/v1/models": _get("OpenAI model list (the one loaded model)"),
            "/api/tags": _get("Ollama model list (the one loaded model)"),
            "/api/ps": _get("Ollama running models"),
            "/api/status": _get("model, engine, versions, TPU devices and memory, queue, uptime"),
            "/health": health,
            "/metrics": _get("Prometheus metrics", {"type": "string"}, "text/plain"),
            "/openapi.json": _get("this document"),
        },
        "components": {
            "schemas": _components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
