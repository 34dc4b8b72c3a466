"""`llm-tpu chat`: chat with the model in the terminal.

By default a full-screen chat (Textual) talks to the service over its Unix socket. When no service is
listening there, chat starts a private `llm-tpu serve` on a socket of its own (with --model/--engine),
waits until it is ready and stops it on exit; --no-spawn turns that off.

--plain (automatic when stdin, stdout or stderr is not a terminal) is a line-based chat that loads the model in
this process: Ctrl-C while an answer streams stops that answer (kept in the history as far as it got);
Ctrl-C or Ctrl-D at the prompt leaves. `/reset` starts a new conversation, `/exit` leaves.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from appliance.cli.options import (
    add_generation_options,
    add_model_options,
    config_from_args,
    generation_options,
)
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.generation.types import Finished, Message, Notice, TextDelta, validate_messages
from appliance.models.loader import load_model
from appliance.service.client import ServiceClient, UnixSocketTransport, find_socket

HELP = "Type a message and Enter. /reset starts over, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer."


def run(args: argparse.Namespace) -> int:
    # Textual draws on stderr, so all three must be the terminal for the full-screen chat.
    if args.plain or not (sys.stdin.isatty() and sys.stdout.isatty() and sys.stderr.isatty()):
        return run_plain(args)
    return run_tui(args)


def _service_listening(client: ServiceClient) -> bool:
    try:
        client.health()
    except ServiceUnavailable:
        return False
    return True


def run_tui(args: argparse.Namespace) -> int:
    from appliance.tui import ChatApp, LocalService

    options = generation_options(args, config_from_args(args))
    path = find_socket(args.socket)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        # Someone else's service: a private one would fight it for the TPU.
        raise ServiceUnavailable(
            f"permission denied on {path}",
            hint="add your user to the llm-tpu group (sudo adduser $USER llm-tpu) and log in again",
        )
    client = ServiceClient(UnixSocketTransport(str(path), 600.0))
    child: LocalService | None = None
    if _service_listening(client):
        if args.model or args.engine:
            print(f"note: using the service at {path}; --model/--engine are ignored", file=sys.stderr)
    elif not args.no_spawn:
        child = LocalService(model=args.model, engine=args.engine, config=args.config)
        print(f"no service at {path}; starting a private one ...", file=sys.stderr, flush=True)
        try:
            child.start()
            child.wait_ready(on_wait=lambda why: print(f"  {why} ...", file=sys.stderr, flush=True))
        except BaseException:
            child.stop()
            raise
        client, path = child.client(), child.socket
    try:
        label = f"{path}" + (" (private, stopped on exit)" if child else "")
        ChatApp(client, options=options, system=args.system, service_label=label).run()
    finally:
        if child is not None:
            child.stop()
    return 0


def run_plain(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    options = generation_options(args, config)
    interactive = sys.stdin.isatty()
    if interactive:
        print("loading the model ...", file=sys.stderr, flush=True)
    loaded = load_model(config.model)
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
            messages = validate_messages([*system, *history])
            for event in loaded.generator.generate(messages, options, should_stop=stop.is_set):
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
    p = sub.add_parser(
        "chat",
        help="interactive chat in the terminal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    add_generation_options(p)
    g = p.add_argument_group("service")
    g.add_argument(
        "--socket",
        metavar="PATH",
        help="service socket (default: $LLM_TPU_SOCKET, /run/llm-tpu/llm.sock, or the user-mode socket)",
    )
    g.add_argument(
        "--no-spawn", action="store_true", help="do not start a private service when none is running"
    )
    g.add_argument(
        "--plain",
        action="store_true",
        help="line-based chat with the model loaded in this process (default when not on a terminal)",
    )
    p.set_defaults(func=run)
