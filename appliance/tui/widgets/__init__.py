"""The chat screen's widgets: the message list, the prompt and the status line."""

from __future__ import annotations

from appliance.tui.widgets.message_list import MessageList, MessageView
from appliance.tui.widgets.prompt import PromptInput
from appliance.tui.widgets.status_bar import StatusBar

__all__ = ["MessageList", "MessageView", "PromptInput", "StatusBar"]
