"""The status panel: what /api/status says about the model, the context, the TPU, the queue and the
versions, and how full this conversation is (from the last answer's token counts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["StatusScreen", "status_lines"]


def _mib(value: Any) -> str:
    return f"{value} MiB" if value is not None else "?"


def status_lines(status: Mapping[str, Any], conversation_tokens: int | None) -> list[str]:
    """The panel's lines (plain text, aligned in two columns)."""
    model = status.get("model") or {}
    sampling = model.get("sampling") or {}
    lines = [f"model      {model.get('name') or model.get('ref') or '(none)'}"]
    engine = str(model.get("engine") or "?")
    if sampling.get("greedy_only"):
        engine += " (greedy only: sampling options have no effect)"
    lines.append(f"engine     {engine}")
    seqlen = model.get("max_seq_len")
    lines.append(f"SEQLEN     {seqlen if seqlen else '?'} tokens")
    if conversation_tokens is None:
        lines.append("this chat  its size is known after the next answer")
    elif seqlen:
        share = 100 * conversation_tokens / int(seqlen)
        lines.append(f"this chat  {conversation_tokens} of {seqlen} tokens ({share:.0f}% full)")
    else:
        lines.append(f"this chat  {conversation_tokens} tokens")
    need = model.get("memory_need_bytes")
    if need:
        lines.append(f"TPU need   {int(need) / 2**20:.0f} MiB for this model")
    tpu = status.get("tpu") or {}
    devices = tpu.get("devices") or []
    lines.append(f"TPU        {', '.join(devices) if devices else 'no TPU device nodes'}")
    heaps = tpu.get("heaps") or {}
    for name, heap in heaps.items():
        lines.append(f"  {name:<8} {_mib(heap.get('used_mib'))} used of {_mib(heap.get('size_mib'))}")
    if not heaps and tpu.get("heaps_unavailable"):
        lines.append(f"  heaps    unknown: {tpu['heaps_unavailable']}")
    queue = status.get("queue") or {}
    lines.append(
        f"queue      {queue.get('running', 0)} running, {queue.get('waiting', 0)} waiting (max {queue.get('size')})"
    )
    versions = status.get("versions") or {}
    lines.append("versions   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


class StatusScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f4", "close", "Close", show=False)]

    def __init__(self, status: Mapping[str, Any], conversation_tokens: int | None) -> None:
        super().__init__(classes="dialog-screen")
        self.lines = status_lines(status, conversation_tokens)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="status-panel"):
            yield Static("Service status", classes="title")
            yield Static("\n".join(self.lines), id="status-lines")
            yield Static("Esc closes this panel.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
