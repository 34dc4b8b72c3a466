"""The chat screen's widgets: the chat list, the message list, the prompt and the status line."""

from __future__ import annotations

from appliance.tui.widgets.chat_list import ChatList
from appliance.tui.widgets.message_list import MessageList, MessageView
from appliance.tui.widgets.prompt import PromptInput
from appliance.tui.widgets.status_bar import StatusBar

__all__ = ["ChatList", "MessageList", "MessageView", "PromptInput", "StatusBar"]
