"""The terminal chat UI (Textual) that talks to the service over its Unix socket.

Exports :class:`ChatApp`. It depends on appliance.client and the generation types only.
"""

from __future__ import annotations

from appliance.tui.app import ChatApp

__all__ = ["ChatApp"]
