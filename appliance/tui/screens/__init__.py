"""Modal screens of the chat app, one per file."""

from __future__ import annotations

from appliance.tui.screens.help import HelpScreen

__all__ = ["HelpScreen"]
