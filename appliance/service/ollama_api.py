"""Ollama's routes beside /api/chat: generate, show, version, embed, tags and ps.

/api/generate runs through the same job path as /api/chat (chat_api.ollama_respond) with the prompt as
one user turn (the model's chat template applies), or as is with ``raw: true``. /api/embed answers 501:
no served model produces embeddings (the bmodels are decoder nets with a generation head).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.errors import ModelNotFound
from appliance.service.chat_api import ollama_respond, read_json
from appliance.service.http_errors import HttpError
from appliance.service.model_info import (
    capabilities,
    find_installed,
    installed_besides,
    installed_entry,
    installed_show,
    iso_time,
    loaded_entry,
    model_info,
    parameters_text,
)
from appliance.service.schemas import OllamaGenerateRequest, OllamaModelRequest, parse_request
from appliance.service.state import STATE, ServiceState

__all__ = ["api_embed", "api_generate", "api_ps", "api_show", "api_tags", "api_version"]


NEVER = "9999-12-31T23:59:59Z"  # expires_at of a model that stays loaded (keep_alive -1, or pinned)


def _response_piece(text: str) -> dict[str, Any]:
    return {"response": text}


async def api_generate(request: web.Request) -> web.StreamResponse:
    req = parse_request(OllamaGenerateRequest, await read_json(request))
    req.check_supported()
    state = request.app[STATE]
    if not req.prompt and not req.system:  # Ollama: an empty prompt only loads (keep_alive 0: unloads)
        served = await state.model_for(req.model, req.keep_alive)
        load_ns = served.generator.take_load_duration()  # this request caused the load, not the next one
        reason = "load"
        if state.switcher is not None and state.switcher.keep_alive_s == 0:
            await state.switcher.unload_if_idle_expired()
            reason = "unload"
        return web.json_response(
            {
                "model": served.name,
                "created_at": iso_time(time.time()),
                "response": "",
                "done": True,
                "done_reason": reason,
                "load_duration": load_ns,
            }
        )
    return await ollama_respond(
        request,
        req.model,
        req.to_messages(),
        req.to_options,
        stream=req.stream,
        piece=_response_piece,
        keep_alive=req.keep_alive,
    )


def _installed(state: ServiceState) -> list[dict[str, Any]]:
    """The loaded model first, then the other installed models of the store."""
    served = state.model
    entries = [loaded_entry(served, state.started_wall)] if served is not None else []
    return entries + [installed_entry(model) for model in installed_besides(served)]


async def api_tags(request: web.Request) -> web.Response:
    entries = await asyncio.to_thread(_installed, request.app[STATE])
    return web.json_response({"models": entries})


async def api_ps(request: web.Request) -> web.Response:
    state = request.app[STATE]
    m = state.model
    if m is None or state.phase != "ready":
        return web.json_response({"models": []})
    loaded_at = state.switcher.loaded_wall if state.switcher else state.started_wall
    expires = state.switcher.expires_at() if state.switcher else None
    entry = await asyncio.to_thread(loaded_entry, m, loaded_at)
    entry.update(  # loaded_entry has size_vram already
        expires_at=iso_time(expires) if expires is not None else NEVER,
        context_length=m.engine.limits.max_seq_len,
    )
    return web.json_response({"models": [entry]})


async def api_show(request: web.Request) -> web.Response:
    req = parse_request(OllamaModelRequest, await read_json(request))
    state = request.app[STATE]
    ref = req.ref
    served = state.model
    if served is None or not served.answers_to(ref):
        model = await asyncio.to_thread(find_installed, ref)
        if model is None:
            raise ModelNotFound(f"model {ref!r} is not installed", hint="see GET /api/tags")
        return web.json_response(installed_show(model))  # not loaded: what its manifest says
    info = await asyncio.to_thread(model_info, served)
    entry = await asyncio.to_thread(loaded_entry, served, state.started_wall)
    return web.json_response(
        {
            "modelfile": "",
            "parameters": parameters_text(served, state.config.generation),
            "template": served.generator.tokenizer.chat_template or served.generator.template.name,
            "details": entry["details"],
            "model_info": info,
            "capabilities": capabilities(tools=served.generator.template.render_tools is not None),
            "modified_at": entry["modified_at"],
        }
    )


async def api_version(request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def api_embed(request: web.Request) -> web.Response:
    served = request.app[STATE].model
    name = served.name if served is not None else "none"
    raise HttpError(
        501,
        "embeddings_not_supported",
        f"no served model produces embeddings (the loaded model {name!r} is a chat model: its bmodel has a "
        "generation head, not an embedding output)",
        "compute embeddings elsewhere (e.g. a sentence-transformers model on the host); this appliance "
        "serves chat and completions",
    )
