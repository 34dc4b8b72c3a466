"""A wedged engine call is noticed (issue 9 item 4): `llm-tpu serve` with a scripted engine that hangs
inside a device call; within engine.stall_timeout_s /health turns 503, the watchdog pings to a real
NOTIFY_SOCKET datagram socket stop (so systemd restarts the service), and waiting clients get a JSON
error instead of hanging."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from support.service import (
    LLM_TPU,
    curl,
    notify_listener,
    scripted_settings,
    serve_env,
    wait_healthy,
    write_config,
)

STALL_S = 1.5


class Notifications:
    """Reads the NOTIFY_SOCKET datagrams as systemd would, all the time (a full queue blocks the sender)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                self.got.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue
            except OSError:
                return

    def pings(self, since: float, until: float) -> int:
        return sum(1 for t, m in list(self.got) if since <= t < until and m == "WATCHDOG=1")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def test_wedged_engine_turns_health_503_and_stops_the_watchdog(tmp_path: Path) -> None:
    notify_path, listener = notify_listener(tmp_path)
    sock_path = tmp_path / "llm.sock"
    settings = scripted_settings(
        sock_path,
        model={"scripted": {"wedge_after_tokens": 3}},
        engine={"stall_timeout_s": STALL_S},
        scheduler={"queue_size": 4, "drain_timeout_s": 0.5},
    )
    cfg = write_config(tmp_path, settings)
    env = serve_env(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="200000")
    proc = subprocess.Popen([LLM_TPU, "serve", "--config", str(cfg)], env=env, stderr=subprocess.PIPE)
    results: dict[str, tuple[int, str]] = {}
    notes = Notifications(listener)
    try:
        wait_healthy(sock_path)
        t0 = time.monotonic()
        time.sleep(0.6)
        assert notes.pings(t0, time.monotonic()) >= 3  # every 0.1 s while healthy

        def chat(key: str, stream: bool) -> None:
            body = {
                "stream": stream,
                "messages": [{"role": "user", "content": "Hi"}],
                "options": {"num_predict": 20},
            }
            results[key] = curl(str(sock_path), "/api/chat", json.dumps(body), timeout=60)

        threads = [threading.Thread(target=chat, args=("running", False))]
        threads[0].start()
        time.sleep(0.3)
        threads.append(threading.Thread(target=chat, args=("queued", False)))
        threads[1].start()
        t_wedged = time.monotonic()
        deadline = t_wedged + STALL_S + 5
        while time.monotonic() < deadline:
            status, text = curl(str(sock_path), "/health")
            if status == 503:
                break
            time.sleep(0.1)
        detected = time.monotonic() - t_wedged
        assert status == 503, text
        health = json.loads(text)
        assert health["status"] == "stalled" and "no progress" in health["reason"]
        print(f"\n/health turned 503 {detected:.2f} s after the engine wedged (stall timeout {STALL_S} s)")
        for t in threads:
            t.join(20)
        for key in ("running", "queued"):
            status, text = results[key]
            assert status == 503, (key, status, text)
            assert json.loads(text)["code"] == "engine_stalled"
        # no more watchdog pings once stalled (STATUS lines may still come)
        t1 = time.monotonic() + 0.2
        time.sleep(1.2)
        assert notes.pings(t1, time.monotonic()) == 0, notes.got[-10:]
        assert any("STATUS=error: the engine made no progress" in m for _, m in notes.got)
        status, text = curl(
            str(sock_path), "/api/chat", json.dumps({"messages": [{"role": "user", "content": "x"}]})
        )
        assert status == 503 and "no progress" in json.loads(text)["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notes.close()
