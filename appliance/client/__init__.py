"""Clients of the service's HTTP API over its Unix socket (or TCP), built on httpx.

Exports :class:`ServiceClient` (sync: the commands), :class:`AsyncServiceClient` (async: the chat
TUI), :class:`LocalService` (a private `llm-tpu serve` child), :func:`find_socket`, and from :mod:`appliance.client.wire` the pieces both share. Errors are
the ApplianceError the service named by its code (:func:`appliance.errors.error_class`).
"""

from __future__ import annotations

from appliance.client.aio import AsyncServiceClient
from appliance.client.private_service import LocalService
from appliance.client.socket_path import find_socket
from appliance.client.sync import DEFAULT_TIMEOUT_S, ServiceClient
from appliance.client.wire import chunk_event, final_timings

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AsyncServiceClient",
    "LocalService",
    "ServiceClient",
    "chunk_event",
    "final_timings",
    "find_socket",
]
