"""The model picker: the models the service offers (/api/tags), each with the TPU memory it needs
(``size_vram``) against what is free on the NPU heap (/api/status), and a "fits" badge.

Enter on a model picks it for the current chat (the screen's result is its name); the app then asks the
service to load it. A model the badge says does not fit can still be picked: the service's check is the
one that counts, and its refusal is shown as a notification. Like the service's own check, a model fits
when its need is at most the free heap plus what the loaded model frees once it is unloaded.
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

__all__ = ["ModelsScreen", "model_lines"]

MIB = 2**20
HOST_FORMATS = frozenset({"host", "scripted"})  # engines that hold no TPU memory


def _free_mib(status: Mapping[str, Any]) -> int | None:
    npu = ((status.get("tpu") or {}).get("heaps") or {}).get("npu") or {}
    size, used = npu.get("size_mib"), npu.get("used_mib")
    return int(size) - int(used) if size is not None and used is not None else None


def _name(model: Mapping[str, Any]) -> str:
    return str(model.get("name") or model.get("model") or "?")


def model_lines(models: Sequence[Mapping[str, Any]], status: Mapping[str, Any]) -> list[str]:
    """One line per model: name, TPU memory need, and whether it fits in what is free (or is loaded)."""
    loaded = str((status.get("model") or {}).get("name") or "")
    free = _free_mib(status)
    freed = sum(int(m.get("size_vram") or 0) for m in models if _name(m) == loaded) // MIB
    lines = []
    for m in models:
        name = _name(m)
        need = int(m.get("size_vram") or 0) // MIB
        on_host = str((m.get("details") or {}).get("format") or "") in HOST_FORMATS
        if name == loaded:
            badge = "● loaded"
        elif on_host and not need:
            badge = "✓ fits (host)"
        elif free is None or not need:
            badge = "? fit unknown"
        else:
            badge = "✓ fits" if need <= free + freed else "✗ does not fit"
        need_text = f"{need} MiB" if need else ("no TPU memory" if on_host else "need unknown")
        free_text = f"{free} MiB free" if free is not None else "free TPU memory unknown"
        lines.append(f"{name:<28} {need_text:>13} / {free_text:<16} {badge}")
    return lines


class ModelsScreen(ModalScreen[str | None]):
    """The installed models; dismissed with the picked model's name, or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f5", "close", "Close", show=False)]

    def __init__(
        self, models: Sequence[Mapping[str, Any]], status: Mapping[str, Any], chat_model: str = ""
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.names = [_name(m) for m in models]
        self.lines = model_lines(models, status)
        self.chat_model = chat_model or str((status.get("model") or {}).get("name") or "")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="models"):
            yield Static("Models the service offers", classes="title")
            options = [Option(line, id=name) for name, line in zip(self.names, self.lines, strict=True)]
            yield OptionList(*options or [Option("(none)", disabled=True)])
            yield Static(f"This chat uses {self.chat_model or 'the service’s model'}.", id="switch-note")
            yield Static(
                "Enter on a model to use it in this chat (the service loads it); Esc closes.", classes="hint"
            )

    def on_mount(self) -> None:
        if self.chat_model in self.names:
            self.query_one(OptionList).highlighted = self.names.index(self.chat_model)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_close(self) -> None:
        self.dismiss(None)
