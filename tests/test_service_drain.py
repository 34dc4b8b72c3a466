"""Stopping with requests in flight (issue 9 item 5): when drain_timeout_s passes, a queued request gets
503 "stopping" and a stream that is cut short ends with an error a client can see, never a 500 or an
OpenAI finish_reason "stop" / Ollama done_reason "stop" that would pass a truncated answer as complete."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from support.service import InProcessService, curl, scripted_settings, write_config


def _wait(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def _start(svc: InProcessService, path: str, body: dict, results: dict, key: str) -> threading.Thread:
    def go() -> None:
        results[key] = curl(svc.socket, path, json.dumps(body))

    t = threading.Thread(target=go)
    t.start()
    return t


LONG = {"messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_drain_timeout_gives_queued_503_stopping_and_cut_streams_an_error(tmp_path: Path, api: str) -> None:
    results: dict[str, tuple[int, str]] = {}
    settings = scripted_settings(
        tmp_path / "llm.sock",
        model={"scripted": {"text": "word " * 50, "step_delay_ms": 20.0}},
        scheduler={"queue_size": 4, "drain_timeout_s": 0.5},
    )
    svc = InProcessService(write_config(tmp_path, settings))
    if api == "openai":
        running = _start(
            svc, "/v1/chat/completions", {**LONG, "stream": True, "max_tokens": 2000}, results, "run"
        )
    else:
        running = _start(svc, "/api/chat", {**LONG, "options": {"num_predict": 2000}}, results, "run")
    _wait(lambda: svc.runner.scheduler.busy)
    queued = [
        _start(svc, "/api/chat", {**LONG, "stream": True}, results, "queued-ollama"),
        _start(svc, "/v1/chat/completions", {**LONG, "stream": True}, results, "queued-openai"),
    ]
    _wait(lambda: svc.runner.scheduler.queue_depth == 2)
    svc.stop()  # drains for 0.5 s, then cancels
    for t in [running, *queued]:
        t.join(30)
    for key in ("queued-ollama", "queued-openai"):
        status, text = results[key]
        assert status == 503, (key, status, text)
        body = json.loads(text)
        code = body["error"]["code"] if isinstance(body["error"], dict) else body["code"]
        assert code == "stopping", body
    status, text = results["run"]
    assert status == 200
    if api == "openai":
        events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
        chunks = [json.loads(e) for e in events if e != "[DONE]"]
        assert not any(c.get("choices") and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
        assert "error" in chunks[-1] and chunks[-1]["error"]["code"] == "stopping", chunks[-1]
        assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in chunks)
    else:
        lines = [json.loads(line) for line in text.splitlines()]
        last = lines[-1]
        assert last["done"] is True and last["done_reason"] == "stopping", last
        assert last.get("error") and "stopping" in last["error"]
        assert any(line["message"]["content"] for line in lines[:-1])
