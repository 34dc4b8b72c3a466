"""`llm-tpu chat`: an interactive streaming chat in the terminal.

Ctrl-C while an answer streams stops that answer (kept in the history as far as it got); Ctrl-C or
Ctrl-D at the prompt leaves. `/reset` starts a new conversation, `/exit` leaves.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from appliance.cli.options import (
    add_generation_options,
    add_model_options,
    generation_options,
    load_from_args,
)
from appliance.errors import ApplianceError
from appliance.generation.types import Finished, Message, Notice, TextDelta

HELP = "Type a message and Enter. /reset starts over, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer."


def run(args: argparse.Namespace) -> int:
    options = generation_options(args)
    interactive = sys.stdin.isatty()
    if interactive:
        print("loading the model ...", file=sys.stderr, flush=True)
    loaded = load_from_args(args)
    if interactive:
        print(f"{loaded.name} on the {loaded.engine.info.kind} engine. {HELP}", file=sys.stderr)
    system = [Message("system", args.system)] if args.system else []
    history: list[Message] = []
    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        stop.set()

    while True:
        try:
            line = input(">>> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            history.clear()
            print("(new conversation)", file=sys.stderr)
            continue
        history.append(Message("user", text))
        stop.clear()
        previous = signal.signal(signal.SIGINT, on_sigint)
        final: Finished | None = None
        try:
            for event in loaded.generator.generate([*system, *history], options, should_stop=stop.is_set):
                if isinstance(event, TextDelta):
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, Notice):
                    print(f"\n(note: {event.message})", file=sys.stderr)
                elif isinstance(event, Finished):
                    final = event
        except ApplianceError as err:
            history.pop()  # the message was refused: nothing of it stays in the history
            print(f"error: {err.message}" + (f"\nhint: {err.hint}" if err.hint else ""), file=sys.stderr)
            continue
        finally:
            signal.signal(signal.SIGINT, previous)
        sys.stdout.write("\n")
        if final is not None:
            history.append(Message("assistant", final.text))
            if final.done_reason == "cancelled":
                print("(stopped)", file=sys.stderr)
            elif final.done_reason in ("length", "context"):
                print(f"(the answer was cut: {final.done_reason})", file=sys.stderr)
    loaded.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="interactive chat in the terminal", description=__doc__)
    add_model_options(p)
    add_generation_options(p)
    p.set_defaults(func=run)
