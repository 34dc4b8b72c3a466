"""The status line: model, engine, service state and the last answer's speed."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from appliance.tui.stream import TurnStats

__all__ = ["StatusBar"]


class StatusBar(Widget):
    """Holds its parts as attributes and renders them as one line (``line`` is what is shown).

    A fixed one-line widget redrawn without a new layout: it changes with every streamed token."""

    def __init__(self) -> None:
        super().__init__(id="status")
        self.model = ""
        self.engine = ""
        self.state = "connecting…"
        self.streamed_tokens: int | None = None
        self.stats: TurnStats | None = None
        self.line = ""

    def on_mount(self) -> None:
        self.show()

    def set(
        self,
        *,
        model: str | None = None,
        engine: str | None = None,
        state: str | None = None,
    ) -> None:
        if model is not None:
            self.model = model
        if engine is not None:
            self.engine = engine
        if state is not None:
            self.state = state
        self.show()

    def answering(self, tokens: int) -> None:
        self.streamed_tokens = tokens
        self.show()

    def finished(self, stats: TurnStats | None, *, clear: bool = False) -> None:
        """The answer ended: show its figures (``clear``: drop the last ones, after Esc or a chat switch)."""
        self.streamed_tokens = None
        if stats is not None:
            self.stats = stats
        elif clear:
            self.stats = None
        self.show()

    def show(self) -> None:
        parts = [self.model or "(no model)"]
        if self.engine:
            parts.append(self.engine)
        parts.append(self.state)
        if self.streamed_tokens is not None:
            parts.append(f"answering… {self.streamed_tokens} tokens")
        elif self.stats is not None:
            s = self.stats
            parts.append(f"{s.tokens_per_second:.1f} tok/s")
            parts.append(f"ttft {s.ttft_s * 1000:.0f} ms")
            parts.append(f"{s.eval_count} tokens ({s.done_reason})")
        self.line = " · ".join(parts)
        self.refresh()

    def render(self) -> Text:
        return Text(self.line, no_wrap=True, overflow="ellipsis")
