"""The compiler's one "not supported yet" error: a config field names what the generator does not
implement, checked before any work."""

from __future__ import annotations

import json

from appliance.errors import ModelFormatError

__all__ = ["SUPPORTED", "UnsupportedModel", "unsupported"]

SUPPORTED = "Qwen2/Qwen2.5, Qwen3 and Llama/SmolLM2, rope scaling none, linear or llama3, no sliding window"


class UnsupportedModel(ModelFormatError):
    """The model uses something the compiler does not implement (yet)."""


def unsupported(field: str, value: object, what: str) -> UnsupportedModel:
    return UnsupportedModel(
        f"not supported yet: {what} (config.json {field} = {json.dumps(value)})",
        hint=f"supported: {SUPPORTED}",
    )
