"""The one-line prompt; Enter sends (binding id ``send``, remappable through the app's keymap)."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

__all__ = ["PromptInput"]


class PromptInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Send", id="send", show=True),
    ]

    def __init__(self) -> None:
        super().__init__(placeholder="Message the model (Enter sends, Esc stops an answer, F1 help)")
