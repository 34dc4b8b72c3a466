"""Modal screens of the chat app, one per file."""

from __future__ import annotations

from appliance.tui.screens.ask import ConfirmScreen, TextScreen
from appliance.tui.screens.help import HelpScreen
from appliance.tui.screens.models import ModelsScreen
from appliance.tui.screens.params import ParamsScreen
from appliance.tui.screens.status import StatusScreen

__all__ = ["ConfirmScreen", "HelpScreen", "ModelsScreen", "ParamsScreen", "StatusScreen", "TextScreen"]
