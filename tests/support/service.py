"""Run the real service for tests: in-process on a background event loop, or as a `llm-tpu serve` process.

Both listen on a real Unix socket in a temporary directory; the in-process form gives tests access to
the runner (and so to the scripted engine's counters), the subprocess form is what systemd runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from appliance.client import ServiceClient
from appliance.config import load_config
from appliance.engine.scripted import ScriptedEngine
from appliance.service.server import ServiceRunner
from appliance.service.state import DeviceProbe, device_nodes
from provisioning.model_admin import StoreAdmin

REPO = Path(__file__).resolve().parents[2]
TINY_HF = REPO / "tests" / "fixtures" / "tiny-qwen2" / "hf"
LLM_TPU = str(Path(sys.executable).with_name("llm-tpu"))


def write_config(directory: Path, settings: Mapping[str, Any]) -> Path:
    path = directory / "appliance.yaml"
    path.write_text(yaml.safe_dump(dict(settings)))
    return path


def scripted_settings(socket_path: Path, **sections: Any) -> dict[str, Any]:
    """Config for the scripted engine on the fixture tokenizer; ``sections`` merge per section."""
    settings: dict[str, Any] = {
        "model": {"ref": str(TINY_HF), "engine": "scripted", "scripted": {"step_delay_ms": 0.0}},
        "server": {"socket_path": str(socket_path), "socket_group": None},
        "scheduler": {"queue_size": 4, "drain_timeout_s": 2.0},
    }
    for name, values in sections.items():
        section = settings.setdefault(name, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(section.get(key), dict):
                section[key] = {**section[key], **value}
            else:
                section[key] = value
    return settings


class InProcessService:
    """A ServiceRunner on its own event loop thread."""

    def __init__(
        self, config_path: Path, device_probe: DeviceProbe = device_nodes, admin: bool = True
    ) -> None:
        self.loaded = load_config(config_path, env={})
        self._device_probe = device_probe
        self._admin = admin
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.runner: ServiceRunner = self.call(self._make)
        self.call(self.runner.start)
        self.call(self._wait_loaded)

    async def _make(self) -> ServiceRunner:
        # what `llm-tpu serve` passes for /api/pull and /api/delete
        admin = StoreAdmin() if self._admin else None
        return ServiceRunner(self.loaded, device_probe=self._device_probe, model_admin=admin)

    async def _wait_loaded(self) -> None:
        await asyncio.wait_for(self.runner.loaded.wait(), 60)

    def call(self, coro_fn: Any, timeout: float = 60) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro_fn(), self.loop)
        return fut.result(timeout)

    @property
    def socket(self) -> str:
        return str(self.runner.state.socket_path)

    @property
    def engine(self) -> ScriptedEngine:
        model = self.runner.state.model
        assert model is not None and isinstance(model.engine, ScriptedEngine)
        return model.engine

    def client(self, timeout: float = 30) -> ServiceClient:
        return ServiceClient.for_socket(self.socket, timeout=timeout)

    def stop(self) -> None:
        self.call(self.runner.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextmanager
def in_process(
    tmp_path: Path, device_probe: DeviceProbe = device_nodes, admin: bool = True, **sections: Any
) -> Iterator[InProcessService]:
    """A service on ``tmp_path``/llm.sock; ``admin=False``: started without model administration, as
    a service that `llm-tpu serve` did not start (/api/pull and /api/delete answer 501)."""
    cfg = write_config(tmp_path, scripted_settings(tmp_path / "llm.sock", **sections))
    service = InProcessService(cfg, device_probe, admin)
    try:
        yield service
    finally:
        service.stop()


def http_client(svc: InProcessService) -> httpx.Client:
    """A plain httpx client on the service's socket (for raw requests and status codes)."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=svc.socket), base_url="http://localhost", timeout=60
    )


def install_model(client: httpx.Client, name: str) -> None:
    """Install the fixture model (the tiny tokenizer directory) under ``name`` through /api/pull: a second
    model the service can switch to. The models directory is LLM_TPU_MODELS_DIR (set it to a temporary one)."""
    body = client.post("/api/pull", json={"model": str(TINY_HF), "install_as": name, "stream": False})
    assert body.status_code == 200, body.text


def running_models(client: httpx.Client) -> list[dict[str, Any]]:
    """/api/ps: the loaded model's record, or nothing."""
    models: list[dict[str, Any]] = client.get("/api/ps").json()["models"]
    return models


def curl(
    socket_path: str, path: str, data: bytes | str | None = None, *extra: str, timeout: float = 60
) -> tuple[int, str]:
    """curl --unix-socket; returns (HTTP status, body)."""
    cmd = [
        "curl",
        "-sS",
        "-N",
        "--max-time",
        str(timeout),
        "--unix-socket",
        socket_path,
        "-w",
        "\n%{http_code}",
    ]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    cmd += [*extra, f"http://localhost{path}"]
    raw = data.encode() if isinstance(data, str) else data
    out = subprocess.run(
        cmd, input=raw, capture_output=True, check=True, timeout=timeout + 10
    ).stdout.decode()
    body, _, code = out.rpartition("\n")
    return int(code), body


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"service exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def wait_healthy(socket_path: Path, timeout: float = 120) -> dict[str, Any]:
    client = ServiceClient.for_socket(socket_path, timeout=10)
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = client.health()
        except Exception as exc:  # socket not yet accepting
            last = {"exception": str(exc)}
        if last.get("status") in ("ok", "failed"):
            return last
        time.sleep(0.1)
    raise AssertionError(f"service not healthy within {timeout} s: {json.dumps(last)}")


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(extra)
    return env


def notify_listener(directory: Path) -> tuple[Path, socket.socket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: (its path, the bound socket)."""
    path = directory / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    return path, listener
