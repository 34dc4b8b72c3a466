"""The command palette (Ctrl+P): every action of the app by its description, and one entry per saved
chat to open it. Built from the app's bindings, so a new action shows up here without a list to keep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from appliance.tui.app import ChatApp

__all__ = ["ChatCommands"]


class ChatCommands(Provider):
    def _entries(self) -> list[tuple[str, str, object]]:
        app: ChatApp = self.app  # type: ignore[assignment]
        entries: list[tuple[str, str, object]] = []
        for action, description, key in app.action_entries():
            entries.append((description, f"{key}  ·  {action}", partial(app.run_action, action)))
        for chat in app.store.chats():
            entries.append((f"Open chat: {chat.title}", f"chat {chat.id}", partial(app.open_chat, chat.id)))
        return entries

    async def discover(self) -> Hits:
        for name, help_text, callback in self._entries():
            yield DiscoveryHit(name, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> AsyncIterator[Hit]:
        matcher = self.matcher(query)
        for name, help_text, callback in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)  # type: ignore[arg-type]
