"""A small synchronous HTTP client for the service, over its Unix socket or TCP.

The transport is the seam (as in httpx): :class:`UnixSocketTransport` and :class:`TCPTransport` speak
HTTP/1.1 through ``http.client``; tests or the TUI can pass any object with the same ``request``
method. Streams are iterators of decoded JSON objects; closing the iterator closes the connection,
which is how a client cancels a generation.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.config.schema import default_socket_path, system_socket_path
from appliance.errors import (
    ApplianceError,
    ContextOverflow,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    ServiceError,
    ServiceUnavailable,
)

__all__ = [
    "Abort",
    "Response",
    "ServiceClient",
    "TCPTransport",
    "Transport",
    "UnixSocketTransport",
    "find_socket",
]


class Response(Protocol):
    status: int

    def read(self) -> bytes: ...
    def readline(self) -> bytes: ...
    def getheader(self, name: str, default: str | None = None) -> str | None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        abort: Abort | None = None,
    ) -> Response: ...


class _OwnedResponse:
    """An HTTPResponse that closes its connection too (closing is how a client cancels a stream)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn, self._resp = conn, resp
        self.status = resp.status

    def read(self) -> bytes:
        return self._resp.read()

    def readline(self) -> bytes:
        return self._resp.readline()

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self._resp.getheader(name, default)

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


class Abort:
    """Cuts a request's connection from another thread (the TUI's Esc), at any stage.

    The service answers a chat's headers only with its first token, so a client blocked in a queue
    or a long prefill has no response to close yet: shutting the socket down is what tells the
    service at once, which then drops the queued request or stops the generation.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cut: Callable[[], None] | None = None
        self.requested = False

    def attach(self, conn: http.client.HTTPConnection) -> None:
        def cut() -> None:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        with self._lock:
            self._cut = cut
            requested = self.requested
        if requested:
            cut()

    def __call__(self) -> None:
        with self._lock:
            self.requested = True
            cut = self._cut
        if cut is not None:
            cut()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None,
    headers: Mapping[str, str],
    abort: Abort | None,
) -> Response:
    """Send the request, let ``abort`` reach the connection, wait for the response headers."""
    conn.request(method, path, body=body, headers=dict(headers))
    if abort is not None:
        abort.attach(conn)
    return _OwnedResponse(conn, conn.getresponse())


@dataclass(frozen=True)
class UnixSocketTransport:
    path: str
    timeout: float | None = 600.0

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        abort: Abort | None = None,
    ) -> Response:
        conn = _UnixHTTPConnection(self.path, self.timeout)
        try:
            return _exchange(conn, method, path, body, headers, abort)
        except FileNotFoundError:
            conn.close()
            raise ServiceUnavailable(
                f"no service socket at {self.path}",
                hint="start it: systemctl start llm-tpu (or llm-tpu serve)",
            ) from None
        except PermissionError:
            conn.close()
            raise ServiceUnavailable(
                f"permission denied on {self.path}",
                hint="add your user to the llm-tpu group (sudo adduser $USER llm-tpu) and log in again",
            ) from None
        except ConnectionRefusedError:
            conn.close()
            raise ServiceUnavailable(
                f"nothing is listening on {self.path}", hint="systemctl status llm-tpu"
            ) from None


@dataclass(frozen=True)
class TCPTransport:
    host: str
    port: int
    token: str | None = None
    timeout: float | None = 600.0

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        abort: Abort | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        all_headers = dict(headers)
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        try:
            return _exchange(conn, method, path, body, all_headers, abort)
        except ConnectionRefusedError:
            conn.close()
            raise ServiceUnavailable(f"nothing is listening on {self.host}:{self.port}") from None


def find_socket(explicit: str | None = None) -> Path:
    """The socket a client should use: explicit, $LLM_TPU_SOCKET, the system socket, or the user one."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LLM_TPU_SOCKET")
    if env:
        return Path(env)
    system = system_socket_path()
    return system if system.exists() else default_socket_path()


_BY_CODE: dict[str, type[ApplianceError]] = {
    "busy": QueueFull,
    "service_unavailable": ServiceUnavailable,
    "model_not_found": ModelNotFound,
    "context_length_exceeded": ContextOverflow,
    "invalid_request": InvalidRequest,
}


def _raise_for(status: int, body: bytes) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):  # OpenAI shape
        message, code, hint = err.get("message"), err.get("code"), err.get("hint")
    else:
        message, code, hint = err, data.get("code"), data.get("hint")
    cls = _BY_CODE.get(str(code), ServiceError)
    exc = cls(str(message or f"HTTP {status}"), hint=hint)
    exc.http_status = status
    raise exc


class ServiceClient:
    """Calls the service's JSON API; errors come back as ApplianceError subclasses."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def for_socket(cls, path: str | None = None, *, timeout: float | None = 600.0) -> ServiceClient:
        return cls(UnixSocketTransport(str(find_socket(path)), timeout))

    def _call(self, method: str, path: str, payload: Any = None, abort: Abort | None = None) -> Response:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self.transport.request(method, path, body, headers, abort)

    def get_json(self, path: str, *, ok_statuses: Sequence[int] = (200,)) -> Any:
        resp = self._call("GET", path)
        try:
            body = resp.read()
        finally:
            resp.close()
        if resp.status not in ok_statuses:
            _raise_for(resp.status, body)
        return json.loads(body)

    def post_json(self, path: str, payload: Any) -> Any:
        resp = self._call("POST", path, payload)
        try:
            body = resp.read()
        finally:
            resp.close()
        if resp.status != 200:
            _raise_for(resp.status, body)
        return json.loads(body)

    def status(self) -> dict[str, Any]:
        return dict(self.get_json("/api/status"))

    def health(self) -> dict[str, Any]:
        return dict(self.get_json("/health", ok_statuses=(200, 503)))

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One whole /api/chat answer (stream: false)."""
        payload: dict[str, Any] = {"model": model, "messages": list(messages), "stream": False}
        if options:
            payload["options"] = dict(options)
        return dict(self.post_json("/api/chat", payload))

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
        abort: Abort | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Ollama-shaped chunks of /api/chat; an in-stream error is raised as ApplianceError.

        ``abort`` (called from any thread) cuts the connection, which cancels the request.
        """
        payload: dict[str, Any] = {"model": model, "messages": list(messages), "stream": True}
        if options:
            payload["options"] = dict(options)
        resp = self._call("POST", "/api/chat", payload, abort)
        try:
            if resp.status != 200:
                _raise_for(resp.status, resp.read())
            while True:
                line = resp.readline()
                if not line:
                    return
                chunk = json.loads(line)
                if "error" in chunk:
                    _raise_for(500, line)
                yield chunk
                if chunk.get("done"):
                    return
        finally:
            resp.close()
