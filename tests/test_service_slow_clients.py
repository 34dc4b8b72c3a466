"""Slow and idle clients cannot starve the service (issue 9 item 3).

A real `llm-tpu serve` process with a low open-file limit (1024, as a unit without LimitNOFILE gets)
and 1,100 TCP connections that send half a request and wait: the Unix socket still answers a chat, the
stuck connections are closed after the header timeout, and the log stays small.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

from support.service import LLM_TPU, curl, scripted_settings, serve_env, wait_healthy, write_config

from appliance.service.log_limits import RateLimitFilter

TOKEN = "s3cret-token-for-tests-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_idle_tcp_connections_do_not_starve_the_unix_socket(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    port = _free_port()
    sock_path = tmp_path / "llm.sock"
    settings = scripted_settings(
        sock_path,
        server={
            "header_timeout_s": 2.0,
            "max_connections": 256,
            "tcp": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": port,
                "token_file": str(token),
                "max_connections": 128,
            },
        },
    )
    cfg = write_config(tmp_path, settings)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [LLM_TPU, "serve", "--config", str(cfg)], env=serve_env(), stderr=log, preexec_fn=_low_fd_limit
        )
    conns: list[socket.socket] = []
    try:
        wait_healthy(sock_path)
        for _ in range(1100):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            except OSError:
                s.close()
                continue
            conns.append(s)
        t0 = time.monotonic()
        body = json.dumps(
            {"stream": False, "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 8}}
        )
        status, out = curl(str(sock_path), "/api/chat", body, timeout=30)
        latency = time.monotonic() - t0
        assert status == 200, out
        print(f"\nchat over the Unix socket with {len(conns)} stuck TCP connections: {latency * 1000:.0f} ms")
        # over the cap, connections are answered 503 at once; the others are closed by the header timeout
        time.sleep(3.5)
        closed = 0
        for s in conns:
            try:
                data = s.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 503")
            except OSError:
                closed += 1
        assert closed == len(conns)
        status, _ = curl(str(sock_path), "/health")
        assert status == 200
    finally:
        for s in conns:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text(errors="replace")
    assert len(text) < 64 * 1024, f"log grew to {len(text)} bytes"
    assert text.count("Too many open files") <= 2
    assert "connection limit" in text  # said, rate-limited


def test_rate_limited_log_says_how_many_were_dropped() -> None:
    now = [0.0]
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    handler.addFilter(RateLimitFilter(interval_s=10.0, clock=lambda: now[0]))
    logger = logging.getLogger("test.ratelimit")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(10_000):
            logger.error("accept failed: %s", f"Too many open files ({i})")
        logger.error("something else")
        now[0] = 11.0
        logger.error("accept failed: %s", "again")
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "accept failed: Too many open files (0)",
        "something else",
        "accept failed: again (9999 similar messages suppressed in the last 11 s)",
    ]
