"""What the TUI benchmarks share: a `llm-tpu serve` child on the scripted engine, and a client that
notes when each chat chunk reaches it (before any UI work)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from appliance.client import AsyncServiceClient

REPO = Path(__file__).resolve().parents[1]
TINY_HF = REPO / "tests" / "fixtures" / "tiny-qwen2" / "hf"


class TimedClient(AsyncServiceClient):
    """Notes (time, answer characters so far) as each chunk reaches the client."""

    def __init__(self, path: str) -> None:
        super().__init__(httpx.AsyncHTTPTransport(uds=path), where=path, unix=True, timeout=60)
        self.arrivals: list[tuple[float, int]] = []

    @property
    def chunk_times(self) -> list[float]:
        return [t for t, _ in self.arrivals]

    async def chat_stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        self.arrivals = []
        chars = 0
        async for chunk in super().chat_stream(messages, model=model, options=options):
            chars += len((chunk.get("message") or {}).get("content") or "")
            self.arrivals.append((time.perf_counter(), chars))
            yield chunk


@contextmanager
def scripted_service(step_ms: float) -> Iterator[str]:
    """A fresh `llm-tpu serve` whose scripted engine sleeps ``step_ms`` per token; yields its socket."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "llm.sock"
        cfg = Path(tmp) / "appliance.yaml"
        scripted = {"step_delay_ms": step_ms}
        cfg.write_text(
            yaml.safe_dump(
                {
                    "model": {"ref": str(TINY_HF), "engine": "scripted", "scripted": scripted},
                    "server": {"socket_path": str(sock), "socket_group": None},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
        exe = str(Path(sys.executable).with_name("llm-tpu"))
        proc = subprocess.Popen([exe, "serve", "--config", str(cfg)], env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            with httpx.Client(
                transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://localhost"
            ) as probe:
                while True:
                    try:
                        if probe.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:  # not accepting yet
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the scripted service did not start")
                    time.sleep(0.1)
            yield str(sock)
        finally:
            proc.terminate()
            proc.wait(15)
