"""The stock `ollama` and `openai` clients (and plain httpx) pointed at an in-process service, over its
Unix socket or its TCP listener with a bearer token (what integrators' tools do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from support.service import InProcessService

TOKEN = "conformance-token-0123456789abcdef"
VIA = pytest.mark.parametrize("via", ["unix", "tcp"])


def tcp_settings(tmp: Path, **extra: Any) -> dict[str, Any]:
    """A ``server.tcp`` section on a free loopback port with TOKEN in a token file under ``tmp``."""
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o640)
    return {"enabled": True, "host": "127.0.0.1", "port": 0, "token_file": str(token_file), **extra}


def tcp_base(svc: InProcessService) -> str:
    assert svc.runner.tcp_address is not None
    host, port = svc.runner.tcp_address
    return f"http://{host}:{port}"


def ollama_client(svc: InProcessService, via: str = "unix") -> ollama.Client:
    if via == "unix":
        return ollama.Client(host="http://localhost", transport=httpx.HTTPTransport(uds=svc.socket))
    return ollama.Client(host=tcp_base(svc), headers={"Authorization": f"Bearer {TOKEN}"})


def openai_client(svc: InProcessService, via: str = "unix") -> openai.OpenAI:
    if via == "unix":
        http = httpx.Client(transport=httpx.HTTPTransport(uds=svc.socket))
        return openai.OpenAI(
            base_url="http://localhost/v1", api_key="unused", http_client=http, max_retries=0
        )
    return openai.OpenAI(base_url=tcp_base(svc) + "/v1", api_key=TOKEN, max_retries=0)


def raw_client(svc: InProcessService, via: str = "unix") -> httpx.Client:
    if via == "unix":
        return httpx.Client(transport=httpx.HTTPTransport(uds=svc.socket), base_url="http://localhost")
    return httpx.Client(base_url=tcp_base(svc), headers={"Authorization": f"Bearer {TOKEN}"})
