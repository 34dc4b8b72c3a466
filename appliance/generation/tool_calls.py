"""Tool calls in a model's answer: Qwen2/2.5's ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

``split_tool_calls`` parses a whole answer; ``ToolCallFilter`` lets a stream pass text through until a
call may begin and holds the rest back, so that the call's markup never reaches a client as content.
A block whose JSON does not parse (or has no name) stays content: nothing the model said is lost.
"""

from __future__ import annotations

import json
import re

from appliance.generation.types import ToolCall

__all__ = ["OPEN", "ToolCallFilter", "split_tool_calls"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.DOTALL)


def _call(body: str) -> ToolCall | None:
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(value["name"], json.dumps(arguments, ensure_ascii=False))


def split_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the text without the well-formed call blocks, stripped; the calls in order)."""
    calls: list[ToolCall] = []

    def take(match: re.Match[str]) -> str:
        call = _call(match.group(1))
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    rest = _BLOCK.sub(take, text)
    return (rest.strip() if calls else text), calls


class ToolCallFilter:
    """Streams content until ``<tool_call>`` (or a prefix of it at the end of what came) appears; from
    there on it holds the text back until ``finish`` parses it."""

    def __init__(self) -> None:
        self._held = ""
        self._holding = False

    def feed(self, text: str) -> str:
        """The part of ``text`` that is content for certain."""
        if self._holding:
            self._held += text
            return ""
        text = self._held + text
        self._held = ""
        at = text.find(OPEN)
        if at >= 0:
            self._holding = True
            self._held = text[at:]
            return text[:at]
        for n in range(min(len(OPEN) - 1, len(text)), 0, -1):  # a call may be starting at the end
            if OPEN.startswith(text[-n:]):
                self._held = text[-n:]
                return text[:-n]
        return text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(the held text that is content after all, the calls in it)."""
        held, self._held = self._held, ""
        return split_tool_calls(held) if self._holding else (held, [])
