"""The help screen: what the keys do (read from the app's live bindings, so remapped keys show)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]

ABOUT = (
    "Chat with the model the appliance serves. The whole conversation is sent with every message; "
    "the service reuses what it already computed, so long chats stay fast."
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close", id="close_help"),
    ]

    def __init__(self, keys: list[tuple[str, str]], service: str) -> None:
        super().__init__()
        self.keys = keys
        self.service = service

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("llm-tpu chat", classes="title")
            yield Static(ABOUT)
            width = max((len(key) for key, _ in self.keys), default=0)
            yield Static("\n".join(f"{key:>{width}}  {what}" for key, what in self.keys), classes="keys")
            yield Static(f"service: {self.service}", classes="service")
            yield Static("Esc closes this screen.", classes="hint")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
