"""The chat's parameters: its system prompt and sampling values, used from the next request on.

An empty field leaves the value to the service (the model's generation_config.json, else the
appliance's defaults). A bad value is named under the form and the dialog stays open.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, Switch, TextArea

from appliance.errors import InvalidRequest
from appliance.tui.store import ChatParams, params_from_form

__all__ = ["ParamsScreen"]

FIELDS = (
    ("temperature", "temperature", "0.7"),
    ("top_p", "top p", "0.9"),
    ("top_k", "top k", "0 = off"),
    ("repeat_penalty", "repeat penalty", "1.1"),
    ("max_tokens", "max tokens", "service default"),
)


def _text(value: float | int | None) -> str:
    return "" if value is None else str(value)


class ParamsScreen(ModalScreen[ChatParams | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, title: str, params: ChatParams, greedy_only: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self.chat_title = title
        self.params = params
        self.greedy_only = greedy_only

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="params"):
            yield Static(f"Parameters of “{self.chat_title}”", classes="title")
            yield Label("System prompt")
            yield TextArea(
                self.params.system, id="system", soft_wrap=True, show_line_numbers=False, compact=True
            )
            with Grid(id="fields"):
                for name, label, placeholder in FIELDS:
                    yield Label(label)
                    yield Input(
                        _text(getattr(self.params, name)), placeholder=placeholder, id=name, compact=True
                    )
                yield Label("greedy")
                yield Switch(self.params.greedy, id="greedy")
            if self.greedy_only:
                yield Static("This model's bmodel decodes greedily whatever these say.", classes="note")
            yield Static("", id="problem")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#system", TextArea).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        values = {name: self.query_one(f"#{name}", Input).value for name, _, _ in FIELDS}
        values["system"] = self.query_one("#system", TextArea).text
        try:
            params = params_from_form(values, self.query_one("#greedy", Switch).value)
        except InvalidRequest as err:
            self.query_one("#problem", Static).update(err.message)
            return
        self.dismiss(params)

    def action_cancel(self) -> None:
        self.dismiss(None)
