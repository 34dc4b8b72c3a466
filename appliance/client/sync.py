"""The synchronous client (httpx) for the commands: `ask`, `chat --plain`, `bench --service`, `status`.

The transport is the seam, as in httpx: :meth:`ServiceClient.for_socket` uses httpx's Unix-socket
transport, :meth:`ServiceClient.for_tcp` plain TCP with the bearer token, and tests may pass any
``httpx.BaseTransport`` (``httpx.MockTransport`` included). Streams are generators of decoded chunks;
closing one (or breaking out of it) closes the connection, which makes the service cancel the request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from appliance.client.wire import (
    chat_payload,
    chunk_event,
    connect_error,
    cut_short,
    parse_chunk,
    service_error,
)
from appliance.generation.types import GenerationEvent, TextDelta

__all__ = ["DEFAULT_TIMEOUT_S", "ServiceClient"]

DEFAULT_TIMEOUT_S = 600.0  # a read may wait for a long prefill on a big model


class ServiceClient:
    """Calls the service's JSON API; errors come back as ApplianceError subclasses."""

    def __init__(
        self,
        transport: httpx.BaseTransport,
        *,
        base_url: str = "http://localhost",
        where: str = "",
        unix: bool = False,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.where = where or base_url
        self._unix = unix
        self._http = httpx.Client(
            transport=transport,
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout, connect=min(timeout or 10.0, 10.0)),
        )

    @classmethod
    def for_socket(cls, path: str | Path, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> ServiceClient:
        return cls(httpx.HTTPTransport(uds=str(path)), where=str(path), unix=True, timeout=timeout)

    @classmethod
    def for_tcp(
        cls, host: str, port: int, token: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> ServiceClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return cls(
            httpx.HTTPTransport(),
            base_url=f"http://{host}:{port}",
            where=f"{host}:{port}",
            headers=headers,
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, payload: Any = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=payload)
        except httpx.TransportError as exc:
            raise connect_error(exc, self.where, self._unix) from None

    def get_json(self, path: str, *, ok_statuses: Sequence[int] = (200,)) -> Any:
        resp = self._request("GET", path)
        if resp.status_code not in ok_statuses:
            raise service_error(resp.status_code, resp.content)
        return resp.json()

    def post_json(self, path: str, payload: Any) -> Any:
        resp = self._request("POST", path, payload)
        if resp.status_code != 200:
            raise service_error(resp.status_code, resp.content)
        return resp.json()

    def health(self) -> dict[str, Any]:
        return dict(self.get_json("/health", ok_statuses=(200, 503)))

    def status(self) -> dict[str, Any]:
        return dict(self.get_json("/api/status"))

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One whole /api/chat answer (stream: false)."""
        return dict(self.post_json("/api/chat", chat_payload(messages, model, options, stream=False)))

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Ollama-shaped chunks of /api/chat, ending with the final record (done: true)."""
        payload = chat_payload(messages, model, options, stream=True)
        try:
            with self._http.stream("POST", "/api/chat", json=payload) as resp:
                if resp.status_code != 200:
                    raise service_error(resp.status_code, resp.read())
                for line in resp.iter_lines():
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

    def chat_events(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> Iterator[GenerationEvent]:
        """The stream as generation events (TextDelta, Notice, then one Finished), as a local model gives."""
        text: list[str] = []
        for chunk in self.chat_stream(messages, model=model, options=options):
            event = chunk_event(chunk, "".join(text))
            if isinstance(event, TextDelta):
                text.append(event.text)
            if event is not None:
                yield event
