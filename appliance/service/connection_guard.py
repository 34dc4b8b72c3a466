"""Connection limits per listener, so that slow or idle clients cannot exhaust the service's files.

Each listener (the Unix socket, TCP) has its own cap: 1,100 idle TCP connections take at most the TCP
listener's share of file descriptors, and local chats over the Unix socket are still served. A
connection over the cap gets an immediate ``503`` and is closed. A connection must send complete
request headers within ``header_timeout_s`` (slowloris); idle keep-alive connections are closed by
aiohttp's keep-alive timeout (server.idle_timeout_s).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["CappedSockSite", "ListenerGuard"]

log = logging.getLogger("appliance.service")
_END_OF_HEADERS = b"\r\n\r\n"


class ListenerGuard:
    """The open-connection count and the limits of one listener."""

    def __init__(self, name: str, limit: int, header_timeout_s: float) -> None:
        self.name = name
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.active = 0
        self.refused = 0
        self.timed_out = 0

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, factory())

    def busy_response(self) -> bytes:
        body = json.dumps(
            {
                "error": f"too many open connections on the {self.name} listener (limit {self.limit})",
                "code": "busy",
                "hint": "retry in a moment; idle connections are closed after the idle timeout",
            }
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 2\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body


class _GuardedProtocol(asyncio.Protocol):
    """Counts the connection, refuses it over the cap, closes it when its headers are too slow; the
    rest is the wrapped aiohttp protocol's."""

    def __init__(self, guard: ListenerGuard, inner: Any) -> None:
        self._guard = guard
        self._inner: Any = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        guard = self._guard
        if guard.active >= guard.limit:
            guard.refused += 1
            log.warning(
                "%s listener at its connection limit (%d open): refusing new connections with 503",
                guard.name,
                guard.limit,
            )
            self._inner = None
            transport.write(guard.busy_response())
            transport.close()
            return
        guard.active += 1
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(guard.header_timeout_s, self._headers_too_slow)
        self._inner.connection_made(transport)

    def _headers_too_slow(self) -> None:
        self._timer = None
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            if _END_OF_HEADERS in self._tail + data:
                self._timer.cancel()
                self._timer = None
            self._tail = data[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        self._guard.active -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class CappedSockSite(web.SockSite):
    """aiohttp's SockSite with each connection under a :class:`ListenerGuard`."""

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: ListenerGuard) -> None:
        super().__init__(runner, sock)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server), sock=self._sock, backlog=self._backlog
        )
