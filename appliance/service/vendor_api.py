"""The vendor Qwen-TPU demo's API shape, so that scripts written for it keep working.

``POST /chat/completions`` with ``{"question": str, "history": [...], "stream": bool}``. ``history`` is
the vendor's flat list of alternating user and assistant texts (``["你是谁？", "我是Qwen。"]``); pairs
(``[["你是谁？", "我是Qwen。"]]``) are accepted too. The vendor answers ``{"data": <answer>}``, and when
streaming sends Server-Sent Events whose ``data`` is the answer so far (cumulative, not a delta) with no
end marker; we do the same, ending the stream when the answer ends.

Unlike the vendor demo, a history with an odd number of texts is refused (it would make the question an
assistant turn), and generation runs with the service's defaults and its context window.
"""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from appliance.errors import ApplianceError, InvalidRequest
from appliance.generation.types import Message, TextDelta, validate_messages
from appliance.service.chat_api import cancel_job, chain, collect, read_json, start_job
from appliance.service.http_errors import error_body
from appliance.service.schemas import parse_request

__all__ = ["VendorChatRequest", "vendor_chat"]


class VendorChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    history: list[str] | list[list[str]] = []
    stream: bool = False

    def to_messages(self) -> list[Message]:
        flat: list[str] = []
        for i, item in enumerate(self.history):
            if isinstance(item, str):
                flat.append(item)
            elif len(item) == 2:
                flat += item
            else:
                raise InvalidRequest(f"history[{i}] must be a [question, answer] pair")
        if len(flat) % 2:
            raise InvalidRequest(
                f"history holds {len(flat)} texts: it must alternate question, answer",
                hint='e.g. "history": ["你是谁？", "我是Qwen。"]',
            )
        messages = [Message("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(flat)]
        return validate_messages([*messages, Message("user", self.question)])


def _event(text: str) -> bytes:
    # SSE: a multi-line value is sent as one data line per line.
    return "".join(f"data: {line}\r\n" for line in text.split("\n")).encode() + b"\r\n"


async def vendor_chat(request: web.Request) -> web.StreamResponse:
    req = parse_request(VendorChatRequest, await read_json(request))
    job, rest, first, _name = await start_job(request, "", req.to_messages(), lambda defaults: defaults)
    resp: web.StreamResponse | None = None
    try:
        if not req.stream:
            final, _notices = await collect(first, rest)
            return web.json_response({"data": final.text})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        answer = ""
        try:
            async for event in chain(first, rest):
                if isinstance(event, TextDelta):
                    answer += event.text
                    await resp.write(_event(answer))
        except ApplianceError as err:
            await resp.write(b"event: error\r\n" + _event(json.dumps(error_body(err, openai=False))))
        await resp.write_eof()
        return resp
    except ConnectionResetError:  # the client left mid-stream: the job stops below
        return resp if resp is not None else web.Response(status=499)
    finally:
        cancel_job(request, job)
