"""Where the appliance keeps things: system paths when installed, XDG paths for a user.

System mode (the packaged service): /var/lib/llm-tpu, /run/llm-tpu, /etc/llm-tpu. Models that Debian
packages ship (llm-tpu-model-*) are read-only data under /usr/share/llm-tpu/models, searched last:
dpkg owns them, so `models rm` (which works in the first directory) never deletes them.
User mode (development, `make chat`): $XDG_DATA_HOME/llm-tpu, $XDG_RUNTIME_DIR/llm-tpu, $XDG_CACHE_HOME/llm-tpu.
Environment overrides (tests use them): LLM_TPU_MODELS_DIR (os.pathsep-separated), LLM_TPU_CACHE_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "PACKAGED_MODELS_DIR",
    "SYSTEM_MODELS_DIR",
    "SYSTEM_STATE_DIR",
    "cache_dir",
    "model_dirs",
    "user_data_dir",
]

SYSTEM_STATE_DIR = Path("/var/lib/llm-tpu")
SYSTEM_MODELS_DIR = SYSTEM_STATE_DIR / "models"
PACKAGED_MODELS_DIR = Path("/usr/share/llm-tpu/models")


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def user_data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "llm-tpu"


def cache_dir() -> Path:
    value = os.environ.get("LLM_TPU_CACHE_DIR")
    return Path(value) if value else _xdg("XDG_CACHE_HOME", ".cache") / "llm-tpu"


def model_dirs() -> list[Path]:
    """Directories searched for installed models, first match wins."""
    value = os.environ.get("LLM_TPU_MODELS_DIR")
    if value:
        return [Path(p) for p in value.split(os.pathsep) if p]
    return [SYSTEM_MODELS_DIR, user_data_dir() / "models", PACKAGED_MODELS_DIR]
