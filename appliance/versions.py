"""Versions of the appliance and of the stack it runs on (for `llm-tpu version` and GET /api/status)."""

from __future__ import annotations

import platform
from importlib import metadata

from appliance import __version__

__all__ = ["versions"]


def versions() -> dict[str, str]:
    out = {
        "llm-tpu-appliance": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for dist in ("torch", "transformers", "tokenizers", "aiohttp", "textual", "sophon"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
