"""`llm-tpu serve` as systemd runs it: sd_notify, watchdog, SIGTERM drain, socket activation, journald, CLI errors.

The notify test serves the tiny fixture model on the real host engine and checks its greedy answer
against the PyTorch reference.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.service import (
    LLM_TPU,
    TINY_HF,
    curl,
    notify_listener,
    scripted_settings,
    serve_env,
    wait_for_socket,
    wait_healthy,
    write_config,
)

from appliance.service import systemd_integration as sd

REFERENCE = json.loads((TINY_HF.parent / "reference.json").read_text())


def _collect(sock: socket.socket, until: str, timeout: float = 120) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(until in m for m in messages):
            return messages
    raise AssertionError(f"no {until!r} among {messages}")


def test_notify_watchdog_host_engine_and_sigterm(tmp_path: Path) -> None:
    notify_path, listener = notify_listener(tmp_path)
    sock_path = tmp_path / "llm.sock"
    cfg = write_config(
        tmp_path,
        {
            "model": {"ref": str(TINY_HF), "engine": "host"},
            "server": {"socket_path": str(sock_path), "socket_group": None},
        },
    )
    env = serve_env(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
    proc = subprocess.Popen([LLM_TPU, "serve", "--config", str(cfg)], env=env, stderr=subprocess.PIPE)
    try:
        first = _collect(listener, "READY=1")
        joined = "\n".join(first)
        assert "STATUS=loading model" in joined
        ready = next(m for m in first if "READY=1" in m)
        assert "STATUS=ready: hf" in ready
        assert joined.index("STATUS=loading") < joined.index("READY=1")
        pings = [m for m in _collect(listener, "WATCHDOG=1", timeout=2) if m == "WATCHDOG=1"]
        time.sleep(0.5)
        listener.settimeout(0.05)
        with pytest.raises(TimeoutError):
            while True:  # drain what came during the sleep: at 200 ms intervals, at least 2 more pings
                pings.append(listener.recv(4096).decode())
        assert pings.count("WATCHDOG=1") >= 3
        # A real answer from the host engine: greedy tokens equal the PyTorch reference.
        p40 = next(p for p in REFERENCE["prompts"] if p["name"] == "p40_chat")
        body = json.dumps(
            {"messages": p40["messages"], "stream": False, "options": {"num_predict": 8, "temperature": 0}}
        )
        status, text = curl(str(sock_path), "/api/chat", body)
        assert status == 200, text
        answer = json.loads(text)
        assert answer["message"]["content"] == p40["torch_f32"]["text"]
        assert answer["prompt_eval_count"] == p40["length"] and answer["eval_count"] == 8
        status, text = curl(str(sock_path), "/api/status")
        assert json.loads(text)["model"]["engine"] == "host"
        listener.settimeout(5)
        proc.send_signal(signal.SIGTERM)
        stopping = _collect(listener, "STOPPING=1", timeout=10)
        assert any("STOPPING=1" in m for m in stopping)
        assert proc.wait(20) == 0
        assert not sock_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


def test_socket_activation(tmp_path: Path) -> None:
    sock_path = tmp_path / "activated.sock"
    cfg = write_config(tmp_path, scripted_settings(tmp_path / "not-used.sock"))
    env = serve_env()
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(sock_path), LLM_TPU, "serve", "--config", str(cfg)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_socket(sock_path, proc)
        assert wait_healthy(sock_path)["status"] == "ok"  # the first connection started the service
        status, text = curl(str(sock_path), "/api/status")
        st = json.loads(text)
        assert st["socket"] == str(sock_path)
        assert not (tmp_path / "not-used.sock").exists()  # it used the passed fd, it did not bind
        status, text = curl(
            str(sock_path),
            "/api/chat",
            json.dumps({"messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 3}}),
        )
        assert status == 200 and json.loads(text.splitlines()[-1])["eval_count"] == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "(socket activation)" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_errors_are_clear_without_traceback(tmp_path: Path) -> None:
    sock_path = tmp_path / "busy.sock"
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.bind(str(sock_path))
    holder.listen(1)
    cfg = write_config(tmp_path, scripted_settings(sock_path))
    try:
        run = subprocess.run(
            [LLM_TPU, "serve", "--config", str(cfg)],
            env=serve_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode != 0
        assert f"error: {sock_path} is in use by a running service" in run.stderr
        assert "hint:" in run.stderr and "Traceback" not in run.stderr
    finally:
        holder.close()
    run = subprocess.run(
        [LLM_TPU, "serve", "--config", str(cfg), "--socket", "/proc/llm-tpu/llm.sock"],
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "error: cannot create the socket directory /proc/llm-tpu" in run.stderr
    assert "Traceback" not in run.stderr
    # A stale socket file (no process behind it) is replaced, not an error.
    assert sock_path.exists()
    proc = subprocess.Popen([LLM_TPU, "serve", "--config", str(cfg)], env=serve_env(), stderr=subprocess.PIPE)
    try:
        assert wait_healthy(sock_path)["status"] == "ok"
        assert oct(sock_path.stat().st_mode & 0o777) == "0o660"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_failed_load_stays_up_and_says_why(tmp_path: Path) -> None:
    notify_path, listener = notify_listener(tmp_path)
    sock_path = tmp_path / "llm.sock"
    cfg = write_config(
        tmp_path,
        {
            "model": {"ref": str(tmp_path / "no-such-model"), "engine": "host"},
            "server": {"socket_path": str(sock_path), "socket_group": None},
        },
    )
    proc = subprocess.Popen(
        [LLM_TPU, "serve", "--config", str(cfg)],
        env=serve_env(NOTIFY_SOCKET=str(notify_path)),
        stderr=subprocess.PIPE,
    )
    try:
        messages = _collect(listener, "READY=1", timeout=60)
        assert any("STATUS=error:" in m for m in messages)
        health = wait_healthy(sock_path)
        assert health["status"] == "failed" and health["reason"]
        status, text = curl(
            str(sock_path), "/api/chat", json.dumps({"messages": [{"role": "user", "content": "x"}]})
        )
        assert status == 503 and "failed to load" in json.loads(text)["error"]
        run = subprocess.run([LLM_TPU, "status", "--socket", str(sock_path)], capture_output=True, text=True)
        assert run.returncode == 3 and "failed" in run.stdout and "error" in run.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        listener.close()


def test_notify_fallback_without_systemd_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "n.sock"))
    listener.settimeout(2)
    assert sd._notify_datagram("READY=1\nSTATUS=x", str(tmp_path / "n.sock"))
    assert listener.recv(100) == b"READY=1\nSTATUS=x"
    monkeypatch.setitem(sys.modules, "systemd", None)  # import systemd now raises ImportError
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n.sock"))
    assert sd.notify("WATCHDOG=1")
    assert listener.recv(100) == b"WATCHDOG=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd.notify("READY=1")
    listener.close()


def test_watchdog_interval_and_journald_detection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert sd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert sd.watchdog_interval({}) is None
    script = (
        "import os, sys; st = os.fstat(2); os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}';"
        "from appliance.service import systemd_integration as sd; print(sd.under_journald());"
        "os.environ['JOURNAL_STREAM'] = '1:2'; print(sd.under_journald())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False"]
