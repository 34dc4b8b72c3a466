"""The route table's types and the OpenAPI 3.1 document built from it (``GET /openapi.json``).

Each route is declared once, as a :class:`Route` (method, path, handler, summary, request and response
schemas) in appliance.service.app's ``ROUTES``; the aiohttp router and this document are both built from
that list, so the documentation cannot miss or invent a route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from appliance.service.schemas import ErrorBody

__all__ = ["ERRORS", "Handler", "Reply", "Route", "openapi_document"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = type[BaseModel] | Mapping[str, Any]  # a wire model, or a literal JSON schema


@dataclass(frozen=True)
class Reply:
    """One response of a route: a description and its body's schema per content type."""

    description: str
    content: Mapping[str, Schema] = field(default_factory=lambda: {"application/json": {"type": "object"}})


# The error replies every chat route can give (JSON, also in the middle of a stream).
ERRORS: Mapping[str, Reply] = {
    "400": Reply(
        "invalid request (bad JSON, UTF-8, types, options; context overflow)", {"application/json": ErrorBody}
    ),
    "401": Reply("missing or wrong bearer token (TCP listener only)", {"application/json": ErrorBody}),
    "404": Reply("the named model is not served here", {"application/json": ErrorBody}),
    "413": Reply("request body larger than server.max_body_bytes", {"application/json": ErrorBody}),
    "503": Reply("busy (queue full) or model not loaded; see Retry-After", {"application/json": ErrorBody}),
    "504": Reply("the request's deadline passed", {"application/json": ErrorBody}),
}


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "DELETE"]
    path: str
    handler: Handler
    summary: str
    request: type[BaseModel] | None = None  # the JSON body, when the route takes one
    responses: Mapping[str, Reply] = field(default_factory=lambda: {"200": Reply("OK")})


def _schema(schema: Schema, models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    if isinstance(schema, type):
        models[schema.__name__] = schema
        return {"$ref": f"#/components/schemas/{schema.__name__}"}
    return dict(schema)


def _content(content: Mapping[str, Schema], models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    return {ctype: {"schema": _schema(s, models)} for ctype, s in content.items()}


def _operation(route: Route, models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary}
    if route.request is not None:
        op["requestBody"] = {
            "required": True,
            "content": _content({"application/json": route.request}, models),
        }
    op["responses"] = {
        status: {"description": reply.description, "content": _content(reply.content, models)}
        for status, reply in route.responses.items()
    }
    return op


def _components(models: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name in sorted(models):
        schema = models[name].model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas


def openapi_document(version: str, routes: Iterable[Route]) -> dict[str, Any]:
    models: dict[str, type[BaseModel]] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, models)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llm-tpu appliance",
            "version": version,
            "description": "Chat service of the BM1684X LLM appliance. Over the Unix socket every request is "
            "local; over the optional TCP listener every route except /health needs 'Authorization: Bearer'.",
        },
        "paths": paths,
        "components": {
            "schemas": _components(models),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
