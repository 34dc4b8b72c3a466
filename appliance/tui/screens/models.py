"""The model picker: the models the service offers (/api/tags), each with the TPU memory it needs
against what is free on the NPU heap, and a "fits" badge.

Switching the served model needs the service's support (it serves one model per start); until the
service offers it, the picker says so and how to switch by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

__all__ = ["SWITCH_NOT_AVAILABLE", "ModelsScreen", "model_lines"]

SWITCH_NOT_AVAILABLE = (
    "Switching models from the chat is not available yet: the service serves one model per start. "
    "To change it: set model.ref in the service's configuration and restart it (sudo systemctl restart "
    "llm-tpu); with no service running, `llm-tpu chat --model NAME` starts a private one."
)


def _free_mib(status: Mapping[str, Any]) -> int | None:
    npu = ((status.get("tpu") or {}).get("heaps") or {}).get("npu") or {}
    size, used = npu.get("size_mib"), npu.get("used_mib")
    return int(size) - int(used) if size is not None and used is not None else None


def model_lines(models: Sequence[Mapping[str, Any]], status: Mapping[str, Any]) -> list[str]:
    """One line per model: name, memory need, and whether it fits in what is free (or is loaded)."""
    loaded = str((status.get("model") or {}).get("name") or "")
    free = _free_mib(status)
    lines = []
    for m in models:
        name = str(m.get("name") or m.get("model") or "?")
        need = int(m.get("size") or 0) // 2**20
        if name == loaded:
            badge = "● loaded"
        elif free is None or not need:
            badge = "? fit unknown"
        else:
            badge = "✓ fits" if need <= free else "✗ does not fit"
        need_text = f"{need} MiB" if need else "size unknown"
        free_text = f"{free} MiB free" if free is not None else "free TPU memory unknown"
        lines.append(f"{name:<28} {need_text:>12} / {free_text:<16} {badge}")
    return lines


class ModelsScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f5", "close", "Close", show=False)]

    def __init__(self, models: Sequence[Mapping[str, Any]], status: Mapping[str, Any]) -> None:
        super().__init__(classes="dialog-screen")
        self.lines = model_lines(models, status)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="models"):
            yield Static("Models the service offers", classes="title")
            yield OptionList(*[Option(line) for line in self.lines] or [Option("(none)", disabled=True)])
            yield Static("", id="switch-note")
            yield Static("Enter on a model to switch; Esc closes.", classes="hint")

    def on_option_list_option_selected(self) -> None:
        self.query_one("#switch-note", Static).update(SWITCH_NOT_AVAILABLE)

    def action_close(self) -> None:
        self.dismiss(None)
