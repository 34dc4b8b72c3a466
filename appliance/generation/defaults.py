"""A served model's default generation options: built-in, then the model's own, then the config's.

Precedence, lowest first: the config schema's defaults (``generation:``, the built-in defaults), the
sampling keys of the model's ``generation_config.json`` (Hugging Face's file, which the model's authors
tune: Qwen2 ships temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05), then every key a
config file (or LLM_TPU_* variable) actually sets. A request's own options override the result.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from appliance.config.schema import GenerationDefaults
from appliance.generation.types import GenerationOptions

__all__ = ["GENERATION_CONFIG", "model_defaults", "read_generation_config"]

GENERATION_CONFIG = "generation_config.json"

# generation_config.json key -> GenerationOptions field (the file's max_length/max_new_tokens are about
# benchmarks and are not taken: an answer's length is the request's, else max_tokens).
_SAMPLING_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "repetition_penalty": "repetition_penalty",
}


def read_generation_config(directories: Iterable[Path]) -> dict[str, Any]:
    """The GenerationOptions fields the first ``generation_config.json`` found sets (may be empty).

    ``do_sample: false`` means greedy for transformers whatever the temperature says, so it becomes
    temperature 0. A file that cannot be read or parsed counts as absent: it is advice, not a contract.
    """
    for directory in directories:
        path = directory / GENERATION_CONFIG
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        found: dict[str, Any] = {}
        for key, field in _SAMPLING_KEYS.items():
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                found[field] = type(getattr(GenerationOptions(), field))(value)
        if data.get("do_sample") is False:
            found["temperature"] = 0.0
        return found
    return {}


def model_defaults(
    model_sampling: Mapping[str, Any] | None = None, config: GenerationDefaults | None = None
) -> GenerationOptions:
    """The default options of a model whose generation_config.json gave ``model_sampling``
    (:func:`read_generation_config`), under ``config`` (see the module docstring)."""
    config = config or GenerationDefaults.model_validate({})
    values: dict[str, Any] = {
        ("max_new_tokens" if key == "max_tokens" else key): value
        for key, value in config.model_dump().items()
    }
    values.update({k: v for k, v in (model_sampling or {}).items() if k not in config.model_fields_set})
    return dataclasses.replace(GenerationOptions(), **values)
