"""Service overhead and soak benchmark (scripted engine, fixture tokenizer; no device, no torch).

1. Overhead: the same generation run directly through the Generator and streamed through the real
   service (Unix socket + HTTP + NDJSON), in the same process and run. Prints time to first token and
   per-token time for both and the difference. Budget: < 0.5 ms per token, < 5 ms to the first token.
2. Soak: 1,000 sequential requests to a `llm-tpu serve` process, about a third cancelled mid-stream
   by closing the connection. Prints RSS growth (budget < 5%) and checks the queue is empty after.

Run: .venv/bin/python -m bench.bench_service [--tokens N] [--runs N] [--requests N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from appliance.config.schema import ModelSection
from appliance.generation.types import GenerationOptions, TextDelta, validate_messages
from appliance.models.loader import load_model

REPO = Path(__file__).resolve().parents[1]
TINY_HF = REPO / "tests" / "fixtures" / "tiny-qwen2" / "hf"
MESSAGES = [{"role": "user", "content": "Tell me about the quick brown fox."}]


def _request(sock_path: str, payload: dict[str, object]) -> socket.socket:
    body = json.dumps(payload).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(
        b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    return s


def _stream_times(sock_path: str, tokens: int) -> tuple[float, float, int]:
    """(time to first text, total time, text chunks) of one streamed /api/chat over the socket."""
    payload = {"messages": MESSAGES, "options": {"num_predict": tokens}}
    start = time.perf_counter()
    s = _request(sock_path, payload)
    f = s.makefile("rb")
    first = 0.0
    chunks = 0
    # Chunked transfer encoding: size lines and data lines alternate; data lines are JSON.
    while True:
        line = f.readline()
        if not line:
            break
        if not line.startswith(b"{"):
            continue
        chunk = json.loads(line)
        if chunk.get("done"):
            break
        if chunk["message"]["content"]:
            chunks += 1
            if not first:
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    f.close()
    s.close()
    return first, total, chunks


def _direct_times(generator: object, tokens: int) -> tuple[float, float, int]:
    options = GenerationOptions(max_new_tokens=tokens)
    start = time.perf_counter()
    first = 0.0
    chunks = 0
    for event in generator.generate(validate_messages(MESSAGES), options):  # type: ignore[attr-defined]
        if isinstance(event, TextDelta):
            chunks += 1
            if not first:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start, chunks


def bench_overhead(tokens: int, runs: int, step_ms: float) -> dict[str, float]:
    from support.service import InProcessService, scripted_settings, write_config

    scripted = {"step_delay_ms": step_ms}
    section = ModelSection.model_validate({"ref": str(TINY_HF), "engine": "scripted", "scripted": scripted})
    direct_model = load_model(section)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp), scripted_settings(Path(tmp) / "llm.sock", model={"scripted": scripted}))
        svc = InProcessService(cfg)
        try:
            for _ in range(3):  # warm both paths (imports, caches, the KV prefix)
                _direct_times(direct_model.generator, tokens)
                _stream_times(svc.socket, tokens)
            direct, served = [], []
            for _ in range(runs):
                direct.append(_direct_times(direct_model.generator, tokens))
                served.append(_stream_times(svc.socket, tokens))
        finally:
            svc.stop()

    def med(rows: list[tuple[float, float, int]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    d_chunks, s_chunks = med(direct, 2), med(served, 2)
    out = {
        "tokens": tokens,
        "chunks_direct": d_chunks,
        "chunks_served": s_chunks,
        "ttft_direct_ms": med(direct, 0) * 1e3,
        "ttft_served_ms": med(served, 0) * 1e3,
        "per_token_direct_ms": med(direct, 1) / d_chunks * 1e3,
        "per_token_served_ms": med(served, 1) / s_chunks * 1e3,
    }
    out["ttft_overhead_ms"] = out["ttft_served_ms"] - out["ttft_direct_ms"]
    out["per_token_overhead_ms"] = out["per_token_served_ms"] - out["per_token_direct_ms"]
    out["per_token_ratio"] = out["per_token_served_ms"] / out["per_token_direct_ms"]
    return out


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _get(sock_path: str, path: str) -> dict[str, object]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


def bench_soak(requests: int, seed: int = 7) -> dict[str, float]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        sock_path = str(Path(tmp) / "llm.sock")
        cfg = Path(tmp) / "appliance.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "model": {"ref": str(TINY_HF), "engine": "scripted", "scripted": {"step_delay_ms": 0.3}},
                    "server": {"socket_path": sock_path, "socket_group": None},
                    "logging": {"level": "warning"},
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
        exe = str(Path(sys.executable).with_name("llm-tpu"))
        proc = subprocess.Popen([exe, "serve", "--config", str(cfg)], env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if _get(sock_path, "/health").get("status") == "ok":
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            cancelled = 0

            def one() -> bool:
                payload = {
                    "messages": [{"role": "user", "content": f"q{rng.randint(0, 5)}"}],
                    "options": {"num_predict": rng.randint(1, 80)},
                }
                s = _request(sock_path, payload)
                f = s.makefile("rb")
                cancel_after = rng.randint(1, 20) if rng.random() < 0.35 else None
                seen = 0
                while True:
                    line = f.readline()
                    if not line or b'"done": true' in line:
                        break
                    if line.startswith(b"{"):
                        seen += 1
                        if cancel_after is not None and seen >= cancel_after:
                            break
                f.close()
                s.close()
                return cancel_after is not None and seen >= cancel_after

            for _ in range(50):
                one()
            rss_start = _rss_kib(proc.pid)
            t0 = time.perf_counter()
            for _ in range(requests):
                cancelled += one()
            elapsed = time.perf_counter() - t0
            time.sleep(0.3)
            rss_end = _rss_kib(proc.pid)
            status = _get(sock_path, "/api/status")
            queue = status["queue"]
            assert isinstance(queue, dict)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return {
        "requests": requests,
        "cancelled": cancelled,
        "seconds": elapsed,
        "rss_start_mib": rss_start / 1024,
        "rss_end_mib": rss_end / 1024,
        "rss_growth_pct": (rss_end - rss_start) / rss_start * 100,
        "queue_running_after": float(queue["running"]),
        "queue_waiting_after": float(queue["waiting"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--step-ms",
        type=float,
        default=1.0,
        help="simulated device time per token (sleeps, releasing the GIL as sail/bmrt calls do); "
        "0 makes the engine thread a pure-Python GIL hog, a worst case no real engine has",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))  # the in-process service helper lives with the tests

    o = bench_overhead(args.tokens, args.runs, args.step_ms)
    print(
        f"overhead ({o['tokens']} tokens, {args.runs} runs, medians; scripted engine, {args.step_ms} ms/token)"
    )
    print(
        f"  time to first token: direct {o['ttft_direct_ms']:.3f} ms, served {o['ttft_served_ms']:.3f} ms, "
        f"overhead {o['ttft_overhead_ms']:.3f} ms (budget < 5 ms)"
    )
    print(
        f"  per token:           direct {o['per_token_direct_ms']:.4f} ms, served {o['per_token_served_ms']:.4f} ms, "
        f"overhead {o['per_token_overhead_ms']:.4f} ms (budget < 0.5 ms), ratio {o['per_token_ratio']:.2f}x"
    )
    s = bench_soak(args.requests)
    print(
        f"soak ({s['requests']} sequential requests, {s['cancelled']} cancelled mid-stream, {s['seconds']:.1f} s)"
    )
    print(
        f"  RSS {s['rss_start_mib']:.1f} MiB -> {s['rss_end_mib']:.1f} MiB, growth {s['rss_growth_pct']:.2f}% "
        f"(budget < 5%)"
    )
    print(f"  queue after: {s['queue_running_after']:.0f} running, {s['queue_waiting_after']:.0f} waiting")
    ok = (
        o["per_token_overhead_ms"] < 0.5
        and o["ttft_overhead_ms"] < 5
        and s["rss_growth_pct"] < 5
        and s["queue_running_after"] == 0
        and s["queue_waiting_after"] == 0
    )
    print("within budget" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
