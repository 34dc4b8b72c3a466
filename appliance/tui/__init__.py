"""The terminal chat UI (Textual) that talks to the service over its Unix socket.

Exports :class:`ChatApp` (the app) and :class:`LocalService` (a private `llm-tpu serve` child for when
no service is running).
"""

from __future__ import annotations

from appliance.tui.app import ChatApp
from appliance.tui.local_service import LocalService

__all__ = ["ChatApp", "LocalService"]
