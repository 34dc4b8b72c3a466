"""The conversation: a scrolling column of messages whose assistant answers stream in.

Answers are appended through Textual's MarkdownStream, which coalesces fragments that arrive while the
previous update is still rendering; re-rendering the whole answer per token is what makes chat UIs fall
behind a fast stream. The list is anchored to its bottom, so it follows new text only while the user has
not scrolled up.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

__all__ = ["MessageList", "MessageView"]

_ROLE_LABEL = {"user": "you", "assistant": "assistant", "system": "system"}


class MessageView(Vertical):
    """One message: who said it, the text as Markdown, and an optional note (stopped, interrupted)."""

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self._initial = text
        self.body = Markdown(text, classes="body")
        self.note = Static("", classes="note")
        self.note.display = False

    def compose(self) -> ComposeResult:
        yield Static(_ROLE_LABEL.get(self.role, self.role), classes="role")
        yield self.body
        yield self.note

    def start_stream(self) -> MarkdownStream:
        return Markdown.get_stream(self.body)

    def set_note(self, note: str) -> None:
        self.note.update(note)
        self.note.display = bool(note)


class MessageList(VerticalScroll):
    """The messages of the current conversation, oldest first."""

    def on_mount(self) -> None:
        self.anchor()

    async def add(self, role: str, text: str = "") -> MessageView:
        view = MessageView(role, text)
        await self.mount(view)
        return view

    @property
    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    async def clear(self) -> None:
        await self.remove_children()
