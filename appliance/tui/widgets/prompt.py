"""The prompt: a multi-line TextArea. Enter sends, Shift+Enter or Ctrl+J starts a new line, a paste
keeps all its lines, Up on the first line recalls earlier prompts (Down goes forward again).

Binding ids (``send``, ``newline``, ``history_previous``, ``history_next``) can be remapped through the
app's keymap.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

__all__ = ["PromptInput"]


class PromptInput(TextArea):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Send", id="send", priority=True),
        Binding("shift+enter,ctrl+j", "newline", "New line", id="newline", priority=True, show=False),
        Binding("up", "history_previous", "Earlier prompt", id="history_previous", show=False),
        Binding("down", "history_next", "Later prompt", id="history_next", show=False),
    ]

    class Submitted(Message):
        def __init__(self, prompt: PromptInput, value: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.value = value

    def __init__(self) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.placeholder = "Message the model (Enter sends, Shift+Enter/Ctrl+J new line, Esc stops, F1 help)"
        self.prompts: list[str] = []  # earlier prompts, oldest first
        self._recall: int | None = None  # index into history while recalling

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        self.insert("\n")

    def remember(self, text: str) -> None:
        if text and (not self.prompts or self.prompts[-1] != text):
            self.prompts.append(text)
        self._recall = None

    def action_history_previous(self) -> None:
        if self.cursor_location[0] > 0 or not self.prompts:
            self.action_cursor_up()
            return
        self._recall = len(self.prompts) - 1 if self._recall is None else max(0, self._recall - 1)
        self.text = self.prompts[self._recall]
        self.move_cursor((0, 0))

    def action_history_next(self) -> None:
        last_row = self.document.line_count - 1
        if self._recall is None or self.cursor_location[0] < last_row:
            self.action_cursor_down()
            return
        self._recall += 1
        if self._recall >= len(self.prompts):
            self._recall = None
            self.text = ""
        else:
            self.text = self.prompts[self._recall]
            self.move_cursor(self.document.end)

    @property
    def value(self) -> str:
        """The prompt's text (Input's name for it, which the app and tests use)."""
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.text = text
        self.move_cursor(self.document.end)
