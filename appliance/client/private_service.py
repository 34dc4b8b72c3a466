"""A private `llm-tpu serve` child for `llm-tpu chat` when no service is running (user mode).

Exports :class:`LocalService`.

The child listens on a socket in a fresh 0700 directory (under $XDG_RUNTIME_DIR when there is one),
logs there, and is stopped with SIGTERM (the service drains, then exits) when the chat ends. It stays
in our process group so that a closed terminal takes it down with us.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance.client.sync import ServiceClient
from appliance.errors import ApplianceError, ServiceError, ServiceUnavailable

__all__ = ["LocalService"]

_SYSTEMD_VARS = (
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


class LocalService:
    def __init__(
        self,
        *,
        model: str | None = None,
        engine: str | None = None,
        config: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="llm-tpu-chat-", dir=os.environ.get("XDG_RUNTIME_DIR")))
        self.socket = self.directory / "llm.sock"
        self.log = self.directory / "serve.log"
        self.command = [python, "-m", "appliance.cli.main", "serve", "--socket", str(self.socket)]
        for flag, value in (("--model", model), ("--engine", engine), ("--config", config)):
            if value:
                self.command += [flag, value]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Under a systemd user session these would make the child think it is the unit.
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def client(self, timeout: float | None = 600.0) -> ServiceClient:
        return ServiceClient.for_socket(self.socket, timeout=timeout)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 900.0, on_wait: Callable[[str], None] | None = None) -> None:
        """Until /health says ok; ServiceError when the child dies or its model fails to load."""
        assert self.process is not None, "start() first"
        probe = self.client(timeout=10.0)
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"the private service exited with status {self.process.returncode}: {self._log_tail()}",
                    hint=f"run `{' '.join(self.command[2:])}` to see why",
                )
            try:
                health = probe.health()
            except (ApplianceError, OSError):
                health = {"status": "starting"}
            state = str(health.get("status"))
            if state == "ok":
                return
            if state == "failed":
                raise ServiceUnavailable(
                    f"the private service could not load its model: {health.get('reason', '')}",
                    hint=str(health.get("hint") or "check --model and --engine (llm-tpu models list)"),
                )
            if on_wait is not None and state != last:
                on_wait(str(health.get("reason") or state))
            last = state
            time.sleep(0.2)
        raise ServiceUnavailable(
            f"the private service was not ready within {timeout_s:.0f} s", hint=f"see {self.log}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
