"""The asynchronous client (httpx) for the chat TUI: the same calls as :class:`ServiceClient`, awaited.

Cancelling the task that reads a stream closes its connection at once, whether the request is still
queued, prefilling or streaming; the service then drops it. That is all the TUI's Esc needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from appliance.client.sync import DEFAULT_TIMEOUT_S
from appliance.client.wire import chat_payload, connect_error, cut_short, parse_chunk, service_error

__all__ = ["AsyncServiceClient"]


class AsyncServiceClient:
    """Calls the service's JSON API from asyncio; errors come back as ApplianceError subclasses."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        base_url: str = "http://localhost",
        where: str = "",
        unix: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.where = where or base_url
        self._unix = unix
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout or 10.0, 10.0)),
        )

    @classmethod
    def for_socket(cls, path: str | Path, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> AsyncServiceClient:
        return cls(httpx.AsyncHTTPTransport(uds=str(path)), where=str(path), unix=True, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, ok_statuses: Sequence[int] = (200,)) -> Any:
        try:
            resp = await self._http.get(path)
        except httpx.TransportError as exc:
            raise connect_error(exc, self.where, self._unix) from None
        if resp.status_code not in ok_statuses:
            raise service_error(resp.status_code, resp.content)
        return resp.json()

    async def _post(self, path: str, payload: Any) -> Any:
        try:
            resp = await self._http.post(path, json=payload)
        except httpx.TransportError as exc:
            raise connect_error(exc, self.where, self._unix) from None
        if resp.status_code != 200:
            raise service_error(resp.status_code, resp.content)
        return resp.json()

    async def health(self) -> dict[str, Any]:
        return dict(await self._get("/health", (200, 503)))

    async def status(self) -> dict[str, Any]:
        return dict(await self._get("/api/status"))

    async def tags(self) -> list[dict[str, Any]]:
        """The models the service offers (Ollama's /api/tags)."""
        models = (await self._get("/api/tags")).get("models")
        return [dict(m) for m in models] if isinstance(models, list) else []

    async def loaded(self) -> list[dict[str, Any]]:
        """The loaded model, if any (Ollama's /api/ps)."""
        models = (await self._get("/api/ps")).get("models")
        return [dict(m) for m in models] if isinstance(models, list) else []

    async def load(self, model: str) -> dict[str, Any]:
        """Load ``model`` (Ollama's empty /api/generate): the service waits for the running answer,
        switches to it and answers once it is loaded; its errors (not installed, pinned, does not fit
        the TPU memory) raise here."""
        return dict(await self._post("/api/generate", {"model": model, "stream": False}))

    async def chat_stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Ollama-shaped chunks of /api/chat, ending with the final record (done: true)."""
        payload = chat_payload(messages, model, options, stream=True)
        try:
            async with self._http.stream("POST", "/api/chat", json=payload) as resp:
                if resp.status_code != 200:
                    raise service_error(resp.status_code, await resp.aread())
                async for line in resp.aiter_lines():
                    chunk = parse_chunk(line)
                    if chunk is None:
                        continue
                    yield chunk
                    if chunk.get("done"):
                        return
        except httpx.TransportError as exc:
            raise connect_error(exc, self.where, self._unix) from None
        except ValueError as exc:  # half a JSON line: the connection was cut mid-chunk
            raise cut_short(self.where, exc) from None
        raise cut_short(self.where, None)
