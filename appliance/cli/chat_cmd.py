"""`llm-tpu chat`: chat with the model in the terminal.

By default a full-screen chat (Textual) talks to the service over its Unix socket. When no service is
listening there, chat starts a private `llm-tpu serve` on a socket of its own (with --model/--engine),
waits until it is ready and stops it on exit; --no-spawn turns that off. With a running service,
--model opens a chat that names that model (the service loads it on the chat's first message).

--plain (automatic when stdin, stdout or stderr is not a terminal; said on stdout when only stderr is
redirected) is a line-based chat. It talks to the running service too; it loads the model in this
process only with --local (which implies --plain) or when no service runs. Ctrl-C while an answer
streams stops that answer (kept in the history as far as it got); Ctrl-C or Ctrl-D at the prompt
leaves. `/reset` starts a new conversation, `/exit` leaves.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from appliance.cli.options import add_generation_options, add_model_options, requested_options
from appliance.cli.session import ChatTarget, add_target_options, open_target
from appliance.client import AsyncServiceClient, LocalService, ServiceClient, find_socket
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.generation.types import Finished, Message, Notice, TextDelta, ollama_options

HELP = "Type a message and Enter. /reset starts over, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer."


def run(args: argparse.Namespace) -> int:
    # Textual draws on stderr, so all three must be the terminal for the full-screen chat.
    terminals = {"stdin": sys.stdin.isatty(), "stdout": sys.stdout.isatty(), "stderr": sys.stderr.isatty()}
    if args.plain or args.local or not all(terminals.values()):
        if not (args.plain or args.local) and terminals["stdout"]:
            # `chat 2>log`: say where the full-screen chat went, where the user is looking.
            redirected = " and ".join(name for name, tty in terminals.items() if not tty)
            print(f"({redirected} is not a terminal: using the line chat; --plain says so explicitly)")
        return run_plain(args)
    return run_tui(args)


def _service_listening(client: ServiceClient) -> bool:
    try:
        client.health()
    except ServiceUnavailable:
        return False
    return True


def run_tui(args: argparse.Namespace) -> int:
    from appliance.tui import ChatApp, ChatStore, chats_path, keymap_path, load_keymap

    options = ollama_options(requested_options(args))  # the service fills in the rest
    keymap = load_keymap(keymap_path(), ChatApp.binding_ids())  # a bad file stops here, with its error
    store = ChatStore(chats_path())
    path = find_socket(args.socket)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        # Someone else's service: a private one would fight it for the TPU.
        raise ServiceUnavailable(
            f"permission denied on {path}",
            hint="add your user to the llm-tpu group (sudo adduser $USER llm-tpu) and log in again",
        )
    client = ServiceClient.for_socket(path)
    child: LocalService | None = None
    if _service_listening(client):
        if args.engine:
            print(f"note: using the service at {path}; --engine is ignored", file=sys.stderr)
    elif not args.no_spawn:
        child = LocalService(model=args.model, engine=args.engine, config=args.config)
        print(f"no service at {path}; starting a private one ...", file=sys.stderr, flush=True)
        try:
            child.start()
            child.wait_ready(on_wait=lambda why: print(f"  {why} ...", file=sys.stderr, flush=True))
        except BaseException:
            child.stop()
            raise
        path = child.socket
    try:
        label = f"{path}" + (" (private, stopped on exit)" if child else "")
        app_client = AsyncServiceClient.for_socket(path)
        ChatApp(
            app_client,
            store=store,
            options=options,
            system=args.system,
            service_label=label,
            keymap=keymap,
            # A running service loads it on the chat's first message (a private one starts with it).
            model=args.model if child is None else None,
        ).run()
    finally:
        store.close()
        if child is not None:
            child.stop()
    return 0


def run_plain(args: argparse.Namespace) -> int:
    requested = requested_options(args)  # validate before connecting or loading
    interactive = sys.stdin.isatty()
    target = open_target(args)
    try:
        if interactive:
            print(f"{target.name} on the {target.engine} engine, in {target.where}. {HELP}", file=sys.stderr)
        _line_chat(target, requested, args.system, interactive)
    finally:
        target.close()
    return 0


def _line_chat(
    target: ChatTarget, requested: dict[str, Any], system_prompt: str | None, interactive: bool
) -> None:
    system = [Message("system", system_prompt)] if system_prompt else []
    history: list[Message] = []
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
        pieces: list[str] = []
        final: Finished | None = None
        events = target.events([*system, *history], requested)
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    pieces.append(event.text)
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, Notice):
                    print(f"\n(note: {event.message})", file=sys.stderr)
                elif isinstance(event, Finished):
                    final = event
        except KeyboardInterrupt:  # Ctrl-C stops this answer (the stream closes: the service drops it)
            final = None
        except ApplianceError as err:
            history.pop()  # the message was refused: nothing of it stays in the history
            print(f"error: {err.message}" + (f"\nhint: {err.hint}" if err.hint else ""), file=sys.stderr)
            continue
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        sys.stdout.write("\n")
        history.append(Message("assistant", final.text if final is not None else "".join(pieces)))
        if final is None or final.done_reason == "cancelled":
            print("(stopped)", file=sys.stderr)
        elif final.done_reason in ("length", "context"):
            print(f"(the answer was cut: {final.done_reason})", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="interactive chat in the terminal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    add_generation_options(p)
    add_target_options(p)
    g = p.add_argument_group("chat")
    g.add_argument(
        "--no-spawn", action="store_true", help="do not start a private service when none is running"
    )
    g.add_argument(
        "--plain",
        action="store_true",
        help="line-based chat (default when not on a terminal); it talks to the running service too, "
        "and loads the model here only with --local or when no service runs",
    )
    p.set_defaults(func=run)
