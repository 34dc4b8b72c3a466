"""Token -> screen delay of the chat TUI at a device-like pace, while the prompt takes typing.

A `llm-tpu serve` process runs the scripted engine at --rate tokens/s (default 200, 2,000 tokens). The
app runs headless (Textual's run_test: real layout and compositor, no terminal). For each chunk we
note when it reached the client (before any UI work) and the first frame the compositor produced
after the answer on screen held it (the app's ``_display`` hook is where a frame goes to the
terminal). Meanwhile a key is typed into the prompt every 50 ms; we note when each appears in it.

Prints the median and 95th percentile token -> screen delay (target: median < 20 ms) and the
keypress -> prompt delay, and fails (exit 1) when the median misses the target or a key is lost.

Run: .venv/bin/python -m bench.bench_tui_latency [--tokens N] [--rate TOK_PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from textual import events

from appliance.tui import ChatApp
from bench.tui_service import TimedClient, scripted_service

TARGET_MEDIAN_MS = 20.0
TYPED = "typing while it streams"


async def run_once(socket: str, tokens: int) -> tuple[list[float], list[float], bool]:
    """(token -> screen delays, keypress -> prompt delays, every key arrived) for one answer."""
    client = TimedClient(socket)
    app = ChatApp(client, options={"num_predict": tokens, "temperature": 0})
    frames: list[tuple[float, int]] = []  # (time a frame went out, answer characters on screen then)
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        original(screen, renderable)
        views = [v for v in app.messages.views if v.role == "assistant"]
        frames.append((time.perf_counter(), views[-1].shown_chars if views else 0))

    app._display = display  # type: ignore[method-assign]
    key_delays: list[float] = []
    async with app.run_test(size=(100, 40)) as pilot:
        deadline = time.monotonic() + 60
        while not app.ready:
            if time.monotonic() > deadline:
                raise SystemExit("bench_tui_latency: the app did not connect")
            await pilot.pause(0.02)
        app.prompt.text = "Tell me about the quick brown fox."
        app.prompt.focus()
        await pilot.press("enter")
        while not client.arrivals:
            await asyncio.sleep(0.005)
        typed = 0
        while app.answering:
            if typed < len(TYPED):
                before = time.perf_counter()
                char = TYPED[typed]
                # Straight into the app's queue, as the terminal driver does (Pilot.press waits for idle).
                app.post_message(events.Key("space" if char == " " else char, char))
                while not app.prompt.text.endswith(TYPED[: typed + 1]):
                    await asyncio.sleep(0.001)
                key_delays.append(time.perf_counter() - before)
                typed += 1
            await asyncio.sleep(0.05)
        await pilot.pause(0.1)
        all_keys = app.prompt.text == TYPED
    delays = []
    for arrived, chars in client.arrivals[:-1]:  # the last chunk is the final record (no text)
        shown = next((t for t, c in frames if t >= arrived and c >= chars), None)
        if shown is not None:
            delays.append(shown - arrived)
    return delays, key_delays, all_keys


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="tokens per second of the scripted engine")
    args = parser.parse_args([] if __name__ != "__main__" else None)
    with scripted_service(1000.0 / args.rate) as sock:
        delays, keys, all_keys = asyncio.run(run_once(sock, args.tokens))
    if not delays:
        raise SystemExit("bench_tui_latency: no token reached the screen")
    delays.sort()
    med = statistics.median(delays) * 1e3
    p95 = delays[int(len(delays) * 0.95) - 1] * 1e3
    print(f"{args.tokens} tokens at {args.rate:.0f} tok/s (scripted engine), {len(delays)} chunks timed")
    print(f"  token -> screen   median {med:6.1f} ms   p95 {p95:6.1f} ms   max {delays[-1] * 1e3:6.1f} ms")
    print(f"  (target: median < {TARGET_MEDIAN_MS:.0f} ms)")
    if keys:
        print(
            f"  key -> prompt    median {statistics.median(keys) * 1e3:6.1f} ms   max {max(keys) * 1e3:6.1f} ms"
            f"   ({len(keys)} keys typed while streaming, all kept: {all_keys})"
        )
    ok = med < TARGET_MEDIAN_MS and all_keys
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
