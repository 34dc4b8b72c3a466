"""Scheduler behaviour through the real socket: busy queue, disconnects, deadlines, prefix reuse, drain."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from support.service import InProcessService, curl, in_process

STEP_MS = 40.0


def _open_stream(sock_path: str, path: str = "/api/chat", **payload: Any) -> socket.socket:
    """Send a chat request on a raw connection and return it, unread (the caller decides when to close)."""
    body = json.dumps(
        {"model": "", "messages": [{"role": "user", "content": "Hi, Ada!"}], **payload}
    ).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock_path)
    s.sendall(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    return s


def _read_until(s: socket.socket, needle: bytes) -> bytes:
    data = b""
    while needle not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _wait(cond: Any, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached")
        time.sleep(0.002)
    return time.monotonic() - start


def test_disconnect_mid_stream_frees_the_engine_within_one_token(tmp_path: Path) -> None:
    with in_process(tmp_path, model={"scripted": {"step_delay_ms": STEP_MS}}) as svc:
        s = _open_stream(svc.socket, options={"num_predict": 100000})
        _read_until(s, b'"done": false}\n' * 1)
        _wait(lambda: svc.engine.decode_calls >= 3)
        s.close()
        at_close = svc.engine.decode_calls
        freed_after = _wait(lambda: not svc.runner.scheduler.busy)
        extra_tokens = svc.engine.decode_calls - at_close
        assert extra_tokens <= 1, f"engine ran {extra_tokens} more tokens after the client left"
        assert freed_after < 2.5 * STEP_MS / 1000
        # The next request gets the engine at once.
        t0 = time.monotonic()
        status, body = curl(
            svc.socket,
            "/api/chat",
            json.dumps({"messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 2}}),
        )
        assert status == 200 and json.loads(body.splitlines()[-1])["done_reason"] == "length"
        assert time.monotonic() - t0 < 1.0


def test_queue_full_gives_503_busy_and_cancelled_queued_requests_leave_the_queue(tmp_path: Path) -> None:
    with in_process(
        tmp_path, model={"scripted": {"step_delay_ms": STEP_MS}}, scheduler={"queue_size": 1}
    ) as svc:
        running = _open_stream(svc.socket, options={"num_predict": 100000})
        _wait(lambda: svc.runner.scheduler.busy)
        queued = _open_stream(svc.socket, options={"num_predict": 3})
        _wait(lambda: svc.runner.scheduler.queue_depth == 1)
        status, body = curl(
            svc.socket,
            "/v1/chat/completions",
            None,
            "-i",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json.dumps({"messages": [{"role": "user", "content": "x"}]}),
        )
        assert status == 503
        head, _, payload = body.partition("\r\n\r\n")
        assert "Retry-After: 2" in head
        err = json.loads(payload)["error"]
        assert err["code"] == "busy" and "queue_size" in err["hint"]
        queued.close()  # a queued client leaves: its place frees at once, the engine never sees it
        _wait(lambda: svc.runner.scheduler.queue_depth == 0, timeout=2)
        prefills = svc.engine.prefill_calls
        running.close()
        _wait(lambda: not svc.runner.scheduler.busy)
        time.sleep(0.1)
        assert svc.engine.prefill_calls == prefills
        status, _ = curl(
            svc.socket,
            "/api/chat",
            json.dumps({"messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 2}}),
        )
        assert status == 200


def test_deadline_while_generating_and_while_queued(tmp_path: Path) -> None:
    # 400 ms per token: the first request notices its 0.5 s deadline only at 0.8 s, long after the queued
    # one's deadline (submitted right after it) has passed.
    with in_process(
        tmp_path, model={"scripted": {"step_delay_ms": 400}}, scheduler={"request_timeout_s": 0.5}
    ) as svc:
        results: dict[str, tuple[int, str]] = {}

        def run(name: str, stream: bool) -> None:
            payload = {
                "messages": [{"role": "user", "content": "x"}],
                "stream": stream,
                "options": {"num_predict": 100000},
            }
            results[name] = curl(svc.socket, "/api/chat", json.dumps(payload))

        first = threading.Thread(target=run, args=("stream", True))
        first.start()
        _wait(lambda: svc.runner.scheduler.busy)
        second = threading.Thread(target=run, args=("queued", False))
        second.start()
        first.join(10)
        second.join(10)
        status, body = results["stream"]
        assert status == 200
        last = json.loads(body.splitlines()[-1])
        assert last["code"] == "deadline_exceeded" and "while generating" in last["error"]
        status, body = results["queued"]
        assert status == 504
        assert "while waiting in the queue" in json.loads(body)["error"]
        assert curl(svc.socket, "/health")[0] == 200


def test_second_turn_prefills_only_the_new_tokens(tmp_path: Path) -> None:
    with in_process(tmp_path) as svc:
        history: list[dict[str, str]] = [{"role": "user", "content": "Tell me about foxes."}]
        counts = []
        for turn in range(3):
            status, body = curl(
                svc.socket,
                "/api/chat",
                json.dumps({"messages": history, "stream": False, "options": {"num_predict": 12}}),
            )
            assert status == 200
            data = json.loads(body)
            computed = data["prompt_tokens"] - data["reused_tokens"]  # Ollama's count is the whole prompt
            assert data["prompt_eval_count"] == data["prompt_tokens"]
            counts.append(computed)
            assert svc.engine.last_prefill_len == computed
            history += [data["message"], {"role": "user", "content": f"And then {turn}?"}]
        full_first = counts[0]
        # Later turns carry the whole history, yet prefill only their own new tokens.
        assert counts[1] < full_first and counts[2] < full_first
        assert abs(counts[2] - counts[1]) <= 2


def test_stop_drains_running_requests(tmp_path: Path) -> None:
    svc_dir = tmp_path / "a"
    svc_dir.mkdir()
    from support.service import InProcessService, scripted_settings, write_config

    cfg = write_config(
        svc_dir,
        scripted_settings(
            svc_dir / "llm.sock", model={"scripted": {"step_delay_ms": 20}}, scheduler={"drain_timeout_s": 5}
        ),
    )
    svc = InProcessService(cfg)
    s = _open_stream(svc.socket, options={"num_predict": 15})
    _wait(lambda: svc.runner.scheduler.busy)
    svc.stop()
    data = _read_until(s, b'"done": true')
    final = [json.loads(line) for line in data.split(b"\r\n") if line.startswith(b"{")][-1]
    assert final["done_reason"] == "length" and final["eval_count"] == 15
    assert not Path(svc_dir / "llm.sock").exists()


def test_stop_cancels_what_does_not_finish_within_the_drain_bound(tmp_path: Path) -> None:
    svc_dir = tmp_path / "b"
    svc_dir.mkdir()
    from support.service import scripted_settings, write_config

    cfg = write_config(
        svc_dir,
        scripted_settings(
            svc_dir / "llm.sock",
            model={"scripted": {"step_delay_ms": 20}},
            scheduler={"drain_timeout_s": 0.3},
        ),
    )
    svc = InProcessService(cfg)
    s = _open_stream(svc.socket, options={"num_predict": 100000})
    _wait(lambda: svc.runner.scheduler.busy)
    t0 = time.monotonic()
    svc.stop()
    assert time.monotonic() - t0 < 3
    data = _read_until(s, b'"done": true')
    assert b'"done_reason": "stopping"' in data and b'"error": "the service is stopping' in data  # issue 9
