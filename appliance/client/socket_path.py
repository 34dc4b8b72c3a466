"""Which socket a client talks to: the one given, $LLM_TPU_SOCKET, the system service's, the user's."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.config.schema import default_socket_path, system_socket_path

__all__ = ["find_socket"]


def find_socket(explicit: str | Path | None = None) -> Path:
    """The socket a client should use: explicit, $LLM_TPU_SOCKET, the system socket if it exists, else
    the user-mode one (``llm-tpu serve`` as a user)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LLM_TPU_SOCKET")
    if env:
        return Path(env)
    system = system_socket_path()
    return system if system.exists() else default_socket_path()
