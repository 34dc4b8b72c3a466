"""The generation loop every engine shares: tokenizer, chat template, history window, prefix reuse,
sampling, stops and UTF-8-safe streaming.

Public face:

- ``loop.Generator``: runs chats on one engine and streams :class:`TextDelta` / :class:`Notice`
  events, then one :class:`Finished` (with :class:`Timings`);
- :class:`Message` and :func:`validate_messages` (the one check of a history, where it enters);
- :class:`GenerationOptions` and :func:`options_with_defaults` (defaults from the config schema);
- ``tokenizer.ChatTokenizer`` (every tokenizer format) and ``templates.make_template`` /
  ``ChatTemplate``.

The value types (``types``) are re-exported here; the loop, tokenizer and templates load numpy and the
tokenizer libraries, so they are imported from their modules by those who run them (not by the TUI).
"""

from __future__ import annotations

from appliance.generation.types import (
    DoneReason,
    Finished,
    GenerationEvent,
    GenerationOptions,
    Message,
    Notice,
    TextDelta,
    Timings,
    options_with_defaults,
    validate_messages,
)

__all__ = [
    "DoneReason",
    "Finished",
    "GenerationEvent",
    "GenerationOptions",
    "Message",
    "Notice",
    "TextDelta",
    "Timings",
    "options_with_defaults",
    "validate_messages",
]
