"""Incremental detokenization that never emits a broken character, and stop-string handling.

Byte-level BPE splits multi-byte UTF-8 characters (Chinese, emoji) across tokens; decoding the tokens
so far then ends in U+FFFD. We decode a sliding window of ids and release text only once it no longer
ends in U+FFFD (the vendor demos printed the replacement characters). Text that might be the start of a
stop string is held back until it is known not to be one.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.generation.tokenizer import ChatTokenizer

__all__ = ["IncrementalDecoder", "StopStringFilter"]

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turns generated ids into text deltas, one token at a time."""

    # Ids decoded before the new ones, so that tokenizers that look at the previous token
    # (leading-space handling in sentencepiece) decode the new ones the same as in context.
    CONTEXT = 6

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # ids before this are already released as text

    def push(self, token: int) -> str:
        """Add one id; return the text that is now complete (maybe empty)."""
        self._ids.append(token)
        return self._release(final=False)

    def flush(self) -> str:
        """Release whatever is left (at the end of generation), even an incomplete character."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self._read >= len(self._ids):
            return ""
        before = self._tok.decode(self._ids[self._prefix : self._read])
        text = self._tok.decode(self._ids[self._prefix :])
        if not final and (text.endswith(REPLACEMENT) or len(text) <= len(before)):
            return ""
        if not text.startswith(before):  # the tokenizer merged across the boundary: resync
            before = ""
        delta = text[len(before) :]
        self._prefix = max(self._prefix, len(self._ids) - self.CONTEXT)
        self._read = len(self._ids)
        return delta


class StopStringFilter:
    """Holds back text that could begin a stop string; reports when one is complete."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text safe to emit now; sets ``stopped`` when a stop string appeared."""
        if not self._stops:
            return text
        buf = self._pending + text
        cut = min((i for s in self._stops if (i := buf.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return buf[:cut]
        hold = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        self._pending = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
