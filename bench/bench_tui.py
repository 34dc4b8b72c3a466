"""Does the chat TUI keep up with a fast stream? (scripted engine in a `llm-tpu serve` process, no delay)

The app runs headless (Textual's run_test, real layout and compositing, no terminal) against the real
service on a Unix socket. For an answer of N tokens it prints:
  wire      first -> last chunk as the client reads them with no UI (the baseline);
  tui       first -> last chunk read while the TUI renders them;
  lag       last chunk read -> answer fully rendered (history and Markdown complete);
  loop      the worst stall of the UI's event loop while streaming (what a keypress would wait).
Budget (architecture.md): the TUI adds little to the wire time, lag well under a second, loop stalls
short enough that typing never feels frozen (< 100 ms).

Run: .venv/bin/python -m bench.bench_tui [--tokens N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

from appliance.tui import ChatApp
from bench.tui_service import TimedClient, scripted_service

PROMPT = [{"role": "user", "content": "Tell me about the quick brown fox."}]
RUN_TIMEOUT_S = 120.0  # one answer in the app; past this the benchmark is broken, not slow


def _die_on_thread_error(args: threading.ExceptHookArgs) -> None:
    """A benchmark whose reader thread crashed would wait forever for the answer: end the process."""
    sys.__excepthook__(args.exc_type, args.exc_value, args.exc_traceback)
    os._exit(1)


def _deadline_passed(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise SystemExit(f"bench_tui: {what} did not happen within {RUN_TIMEOUT_S:.0f} s")


async def wire_time(client: TimedClient, tokens: int) -> float:
    async for _ in client.chat_stream(PROMPT, options={"num_predict": tokens}):
        pass
    return client.chunk_times[-1] - client.chunk_times[0]


async def tui_run(client: TimedClient, tokens: int) -> tuple[float, float, float, int]:
    """(tui stream time, lag, worst loop stall, answer length) for one answer in a fresh app."""
    app = ChatApp(client, options={"num_predict": tokens})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    async with app.run_test(size=(100, 40)) as pilot:
        while not app.ready:
            _deadline_passed(deadline, "the app connecting")
            await pilot.pause(0.02)
        app.prompt.value = PROMPT[0]["content"]
        stalls: list[float] = []
        streaming = True

        async def watch_loop() -> None:
            while streaming:
                t = time.perf_counter()
                await asyncio.sleep(0.002)
                stalls.append(time.perf_counter() - t - 0.002)

        monitor = asyncio.create_task(watch_loop())
        await pilot.press("enter")
        while app.answering or len(app.history) < 2:
            failures = [n.message for n in app._notifications if n.severity == "error"]
            if failures:
                raise SystemExit(f"bench_tui: the answer failed: {failures}")
            _deadline_passed(deadline, "the answer")
            await asyncio.sleep(0.002)
        streaming = False
        await monitor
        worst = max(stalls, default=0.0)
        await pilot.pause()  # let the last refresh happen
        done = time.perf_counter()
        answer = app.history[1].content
        view = next(v for v in app.messages.views if v.role == "assistant")
        assert view.body.source == answer, "the rendered answer differs from the history"
        return (
            client.chunk_times[-1] - client.chunk_times[0],
            done - client.chunk_times[-1],
            worst,
            len(answer),
        )


def measure(
    tokens: int, runs: int, step_ms: float
) -> tuple[list[float], list[tuple[float, float, float, int]]]:
    """Wire times and TUI runs against a fresh `llm-tpu serve` whose engine sleeps step_ms per token."""
    with scripted_service(step_ms) as sock:
        client = TimedClient(sock)
        asyncio.run(wire_time(client, tokens))  # warm up
        wires = [asyncio.run(wire_time(client, tokens)) for _ in range(runs)]
        results = [asyncio.run(tui_run(client, tokens)) for _ in range(runs)]
    return wires, results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--step-ms",
        type=float,
        action="append",
        help="simulated device time per token; repeatable (default 0 and 1)",
    )
    args = parser.parse_args([] if __name__ != "__main__" else None)
    threading.excepthook = _die_on_thread_error
    med = statistics.median
    for step_ms in args.step_ms or [0.0, 1.0]:
        wires, runs = measure(args.tokens, args.runs, step_ms)
        print(f"{args.tokens} tokens, scripted engine at {step_ms} ms/token, {args.runs} runs (medians)")
        print(f"  wire (no UI)       {med(wires) * 1e3:8.1f} ms  ({args.tokens / med(wires):.0f} tok/s)")
        tui = med(r[0] for r in runs)
        print(f"  tui stream         {tui * 1e3:8.1f} ms  ({args.tokens / tui:.0f} tok/s)")
        print(f"  lag after last     {med(r[1] for r in runs) * 1e3:8.1f} ms  (last chunk read -> rendered)")
        print(f"  worst loop stall   {max(r[2] for r in runs) * 1e3:8.1f} ms  (budget < 100 ms)")
        print(f"  answer length      {runs[0][3]} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
