"""The conversation: a scrolling column of messages whose assistant answers stream in.

While an answer streams it is append-only text (:class:`StreamText`: only the last line is wrapped
again and redrawn per token); when it is complete it is shown once as Markdown. Re-rendering the
whole answer as Markdown per token is what makes chat UIs fall behind a fast stream. The list is
anchored to its bottom, so it follows new text only while the user has not scrolled up.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Markdown, Static

from appliance.tui.widgets.stream_text import StreamText

__all__ = ["AnswerStream", "MessageList", "MessageView"]

_ROLE_LABEL = {"user": "you", "assistant": "assistant", "system": "system"}


class AnswerStream:
    """Where an answer's text goes while it streams (MessageView.start_stream)."""

    def __init__(self, view: MessageView) -> None:
        self.view = view

    async def write(self, text: str) -> None:
        self.view.live.append(text)
        self.view.shown_chars = len(self.view.live.text)

    async def stop(self) -> None:
        """The answer is complete (or stopped): show it as Markdown."""
        view = self.view
        await view.body.update(view.live.text)
        view.body.display = True
        view.live.finish()
        view.live.display = False


class MessageView(Vertical):
    """One message: who said it, the text as Markdown, and an optional note (interrupted, cut short).

    A double click asks the app to copy the message's text (:class:`CopyRequested`)."""

    class CopyRequested(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.body = Markdown(text, classes="body")
        self.live = StreamText(classes="body live")
        self.live.display = False
        self.note = Static("", classes="note")
        self.note.display = False
        self.shown_chars = len(text)  # characters of the text on screen (benchmarks read it)

    def compose(self) -> ComposeResult:
        yield Static(_ROLE_LABEL.get(self.role, self.role), classes="role")
        yield self.body
        yield self.live
        yield self.note

    @property
    def text(self) -> str:
        return self.live.text if self.live.display else self.body.source

    def start_stream(self) -> AnswerStream:
        self.body.display = False
        self.live.display = True
        return AnswerStream(self)

    def on_click(self, event: events.Click) -> None:
        if event.chain >= 2 and self.text:
            self.post_message(self.CopyRequested(self.text))

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
