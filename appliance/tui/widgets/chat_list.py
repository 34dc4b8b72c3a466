"""The chat list (sidebar): the saved chats, the most recently used first; selecting one opens it."""

from __future__ import annotations

from textual.widgets import OptionList
from textual.widgets.option_list import Option

from appliance.tui.store import Chat

__all__ = ["ChatList"]


class ChatList(OptionList):
    """One line per chat (its title); the open chat is highlighted. Option ids are the chat ids."""

    def __init__(self) -> None:
        super().__init__(id="chats")
        self.border_title = "chats"

    def show(self, chats: list[Chat], current: int | None) -> None:
        self.clear_options()
        self.add_options([Option(c.title, id=str(c.id)) for c in chats])
        for index, chat in enumerate(chats):
            if chat.id == current:
                self.highlighted = index

    @property
    def chat_ids(self) -> list[int]:
        return [int(self.get_option_at_index(i).id or 0) for i in range(self.option_count)]
