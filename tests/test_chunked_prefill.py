"""Prefill in chunks (issue 9 item 4): on an engine whose prefill extends its KV cache (host, scripted),
a long prompt is prefilled chunk by chunk, so a client that leaves, or a deadline that passes, stops it
within one chunk instead of holding the engine for the whole prompt; and the engine shows progress."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from support.service import InProcessService, curl, in_process

from appliance.generation.loop import PREFILL_CHUNK
from appliance.generation.types import GenerationOptions, Message

DELAY_MS = 5.0  # per prefilled token: a 1,000-token prompt takes 5 s unchunked


def _long_prompt() -> str:
    return " ".join(f"w{i}" for i in range(700))  # about 1,400 tokens of the fixture tokenizer


def _wait_idle(svc: InProcessService, timeout: float = 30) -> float:
    t0 = time.monotonic()
    while svc.runner.scheduler.busy or svc.runner.scheduler.queue_depth:
        assert time.monotonic() - t0 < timeout
        time.sleep(0.01)
    return time.monotonic() - t0


def test_a_client_leaving_stops_prefill_within_one_chunk(tmp_path: Path) -> None:
    with in_process(tmp_path, model={"scripted": {"text": "ok", "prefill_delay_ms": DELAY_MS}}) as svc:
        body = json.dumps(
            {"messages": [{"role": "user", "content": _long_prompt()}], "options": {"num_predict": 4}}
        )
        proc = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "0.5",
                "--unix-socket",
                svc.socket,
                "-d",
                body,
                "http://x/api/chat",
            ],
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 28  # curl gave up: the client left 0.5 s into the prefill
        held = _wait_idle(svc)
        prefilled = svc.engine.prefilled_tokens
        generator = svc.runner.state.model.generator  # type: ignore[union-attr]
        prompt = [Message("user", _long_prompt())]
        total = len(generator.prompt_ids(prompt, GenerationOptions(max_new_tokens=4)))
        print(
            f"\nclient left after 0.5 s; engine free {held:.2f} s later; prefilled {prefilled} of {total} tokens"
        )
        assert total > 4 * PREFILL_CHUNK
        assert prefilled < total - PREFILL_CHUNK  # stopped early, not after the whole prompt
        assert held < PREFILL_CHUNK * DELAY_MS / 1000 + 1.0  # within about one chunk
        # the next request is served, and reuses the prefilled prefix
        status, out = curl(
            svc.socket,
            "/api/chat",
            json.dumps(
                {
                    "stream": False,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "options": {"num_predict": 2},
                }
            ),
        )
        assert status == 200, out


def test_a_deadline_during_prefill_ends_it(tmp_path: Path) -> None:
    with in_process(
        tmp_path,
        model={"scripted": {"text": "ok", "prefill_delay_ms": DELAY_MS}},
        scheduler={"request_timeout_s": 1.5},
    ) as svc:
        body = json.dumps({"stream": False, "messages": [{"role": "user", "content": _long_prompt()}]})
        status, out = curl(svc.socket, "/api/chat", body)
        assert status == 504 and json.loads(out)["code"] == "deadline_exceeded", out
        _wait_idle(svc)
        assert svc.engine.prefill_calls >= 2  # chunks ran until the deadline, then it stopped
        assert svc.engine.prefilled_tokens < 1.5 / (DELAY_MS / 1000) + PREFILL_CHUNK
