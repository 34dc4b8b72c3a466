"""Where a request came from: the Unix socket (local, its group is the access control) or the TCP listener."""

from __future__ import annotations

from aiohttp import web

__all__ = ["over_tcp"]


def over_tcp(request: web.Request) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return isinstance(sockname, tuple)
