"""The admin routes, /api/pull and /api/delete: install a model into the store, delete one from it.

They are what `llm-tpu models pull` / `models import` / `models rm` do (the same code: `llm-tpu serve`
passes provisioning's StoreAdmin as the state's ModelAdmin), reached over the API. On the Unix socket
they are allowed (the socket's group, llm-tpu, is the access control); over TCP only with
``server.tcp.admin_api: true``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from appliance.errors import ApplianceError
from appliance.service.chat_api import read_json
from appliance.service.http_errors import HttpError, error_body
from appliance.service.request_origin import over_tcp
from appliance.service.schemas import OllamaModelRequest, OllamaPullRequest, parse_request
from appliance.service.state import STATE, ModelAdmin

__all__ = ["api_delete", "api_pull"]


def _admin(request: web.Request, what: str) -> ModelAdmin:
    if over_tcp(request) and not request.app[STATE].config.server.tcp.admin_api:
        raise HttpError(
            403,
            "admin_api_disabled",
            f"{what} is an admin operation and is refused over TCP",
            "use the Unix socket on the box (or `llm-tpu models ...`), or set server.tcp.admin_api: true",
        )
    admin = request.app[STATE].model_admin
    if admin is None:
        raise HttpError(
            501,
            "admin_api_unavailable",
            f"{what}: this service was started without model administration",
            "use `llm-tpu models pull/import/rm` on the box",
        )
    return admin


def _install(admin: ModelAdmin, req: OllamaPullRequest) -> Path:
    return admin.install(req.ref, name=req.install_as, sha256=req.sha256, tokenizer=req.tokenizer)


async def api_pull(request: web.Request) -> web.StreamResponse:
    req = parse_request(OllamaPullRequest, await read_json(request))
    admin = _admin(request, "/api/pull")
    ref = req.ref
    if not req.stream:
        path = await asyncio.to_thread(_install, admin, req)
        return web.json_response({"status": "success", "installed": str(path)})
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    await resp.write(json.dumps({"status": f"pulling {ref}"}).encode() + b"\n")
    try:
        path = await asyncio.to_thread(_install, admin, req)
    except ApplianceError as err:
        await resp.write(json.dumps(error_body(err, openai=False)).encode() + b"\n")
    else:
        line = {"status": "success", "installed": str(path)}
        await resp.write(json.dumps(line).encode() + b"\n")
    await resp.write_eof()
    return resp


async def api_delete(request: web.Request) -> web.Response:
    req = parse_request(OllamaModelRequest, await read_json(request))
    admin = _admin(request, "/api/delete")
    served = request.app[STATE].model
    if served is not None and served.answers_to(req.ref):
        raise HttpError(
            409,
            "model_in_use",
            f"model {req.ref!r} is the one loaded and serving",
            "serve another model first (model.ref in the config), then delete this one",
        )
    path = await asyncio.to_thread(admin.remove, req.ref)
    return web.json_response({"status": "success", "removed": str(path)})
