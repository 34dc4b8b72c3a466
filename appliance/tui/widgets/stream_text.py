"""An answer while it streams: append-only text, wrapped incrementally, drawn line by line.

Re-rendering a growing Markdown answer costs time proportional to its length on every frame (the last
paragraph is re-parsed and re-laid out); at 200 tokens/s that put 70-100 ms between a token and the
screen. Here only the last wrapped line is wrapped again when text arrives, a frame redraws only
that line, and the layout changes only when a line is added. When the answer is complete the
message shows it as Markdown once (see MessageView).
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

__all__ = ["StreamText", "wrap_lines"]

_WORD = re.compile(r"\S+\s*|\s+")


def wrap_lines(text: str, width: int) -> list[str]:
    """Greedy word wrap by terminal cells; a line keeps the spaces after its last word (so that the
    lines joined give the text back); a word wider than the line is cut. Always at least one line."""
    lines: list[str] = []
    line, used = "", 0
    for match in _WORD.finditer(text):
        word = match.group()
        visible = cell_len(word.rstrip())
        if used and used + visible > width:
            lines.append(line)
            line, used = "", 0
        while visible > width:  # a word wider than a line: cut it
            cut = 0
            while cut < len(word) and cell_len(word[: cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
            visible = cell_len(word.rstrip())
        line += word
        used += cell_len(word)
    lines.append(line)
    return lines


class StreamText(Widget):
    DEFAULT_CSS = """
    StreamText { height: auto; }
    """

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.text = ""
        self._done: list[Strip] = []  # wrapped lines that later text can no longer change
        self._tail = ""  # the text of the last wrapped line (and any line being written)
        self._tail_strips: list[Strip] = []
        self._width = 0
        self.streaming = True  # False once the answer is complete: the height fits the text exactly
        self._style = Style()

    # The height grows in steps of this many lines: a new layout of the screen costs tens of ms, so it
    # should come once every few lines of text, not with each one.
    HEIGHT_STEP = 8

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if width != self._width:
            self._rewrap(width)
        return self._height()

    def _lines(self) -> int:
        return len(self._done) + len(self._tail_strips)

    def _height(self) -> int:
        step = self.HEIGHT_STEP if self.streaming else 1
        return max(1, -(-self._lines() // step) * step)

    def _strip(self, line: str) -> Strip:
        text = Text(line.rstrip(" "), style=self._style)
        return Strip(list(text.render(self.app.console)), text.cell_len)

    def _rewrap(self, width: int) -> None:
        self._width = width
        self._done, self._tail, self._tail_strips = [], "", []
        self._place(self.text)

    def _place(self, new: str) -> None:
        """Wrap the tail plus ``new``; every line but the last is final (a finished line too)."""
        if not self._width:
            return
        text = self._tail + new
        *paragraphs, text = text.split("\n")
        for paragraph in paragraphs:  # finished lines are wrapped once
            self._done.extend(self._strip(line) for line in wrap_lines(paragraph, self._width))
        lines = wrap_lines(text, self._width)
        self._done.extend(self._strip(line) for line in lines[:-1])
        self._tail = lines[-1]
        self._tail_strips = [self._strip(self._tail)] if self._tail else []

    def on_mount(self) -> None:
        self._style = self.rich_style

    def append(self, new: str) -> None:
        if not new:
            return
        height_before, lines_before = self._height(), self._lines()
        self.text += new
        self._place(new)
        if self._height() != height_before:
            self.refresh(layout=True)
        else:  # only the changed lines
            first = max(0, lines_before - 1)
            self.refresh(Region(0, first, self.size.width, self._lines() - first))

    def finish(self) -> None:
        """The answer is complete: fit the height to the text."""
        self.streaming = False
        self.refresh(layout=True)

    def render_line(self, y: int) -> Strip:
        lines = len(self._done)
        if y < lines:
            strip = self._done[y]
        elif y - lines < len(self._tail_strips):
            strip = self._tail_strips[y - lines]
        else:
            return Strip.blank(self.size.width, self._style)
        return strip.extend_cell_length(self.size.width, self._style).crop(0, self.size.width)
