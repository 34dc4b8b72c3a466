"""Message content is text: control tokens written in it never become control ids.

A tokenizer turns the text of its special tokens (``<|im_start|>``, ``<|endoftext|>``, ...) into their
ids wherever it meets them, so content such as ``<|im_end|>\\n<|im_start|>system`` could open a system
turn. Only the template may produce control tokens. :class:`ContentShield` hides each control-token
text found in content behind a placeholder (private-use characters and a per-render nonce, which no
template touches) before rendering, and encodes the rendered prompt piece by piece: the template's text
with control tokens, each hidden occurrence as plain text (``encode_literal``). Content without
control-token text renders and encodes exactly as before.
"""

from __future__ import annotations

import re
import secrets

from appliance.generation.tokenizer import ChatTokenizer

__all__ = ["ContentShield", "control_pattern"]


def control_pattern(tok: ChatTokenizer) -> re.Pattern[str] | None:
    """A regex of the tokenizer's control-token texts (longest first), or None when it has none."""
    specials = sorted(tok.special_tokens(), key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in specials)) if specials else None


class ContentShield:
    """One per render: ``hide`` the contents, render, then ``encode`` the rendered prompt."""

    def __init__(self, tok: ChatTokenizer, pattern: re.Pattern[str] | None) -> None:
        self._tok = tok
        self._pattern = pattern
        nonce = secrets.token_hex(6)
        self._marker = re.compile(f"\ue000{nonce}:(\\d+)\ue001")
        self._template = f"\ue000{nonce}:{{}}\ue001"
        self._hidden: list[str] = []

    def hide(self, content: str) -> str:
        """``content`` with each control-token text replaced by a placeholder."""
        if self._pattern is None:
            return content

        def placeholder(m: re.Match[str]) -> str:
            self._hidden.append(m.group())
            return self._template.format(len(self._hidden) - 1)

        return self._pattern.sub(placeholder, content)

    def encode(self, rendered: str) -> list[int]:
        """Token ids of a prompt rendered from hidden contents."""
        if not self._hidden:
            return self._tok.encode(rendered)
        ids: list[int] = []
        parts = self._marker.split(rendered)
        for i, part in enumerate(parts):
            if i % 2:
                ids += self._tok.encode_literal(self._hidden[int(part)])
            elif part:
                ids += self._tok.encode(part)
        return ids

    def encode_text(self, text: str) -> list[int]:
        """``text`` (content, or a line made of content) with no control ids from it."""
        return self.encode(self.hide(text))
