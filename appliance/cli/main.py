"""`llm-tpu`: the one command line of the appliance.

Each subcommand lives in its own module with ``register(subparsers)``; the module sets
``func`` on its parser, which receives the parsed args and returns an exit code.

A command line that names its command imports only that command's module: every module pulls in
what its command runs (the service stack, the HTTP client, provisioning, the compiler), and
``llm-tpu serve`` should not pay for the others before it listens. ``--help`` (or no command, or a
misspelt one) registers them all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

from appliance.errors import ApplianceError

# The command each module adds, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "chat": "appliance.cli.chat_cmd",
    "ask": "appliance.cli.ask_cmd",
    "models": "appliance.cli.models_cmd",
    "bench": "appliance.cli.bench_cmd",
    "serve": "appliance.cli.serve_cmd",
    "status": "appliance.cli.status_cmd",
    "config": "appliance.cli.config_cmd",
    "version": "appliance.cli.version_cmd",
    "provision": "appliance.cli.provision_cmd",
}
COMMAND_MODULES: tuple[str, ...] = tuple(COMMANDS.values())
_VERBOSE_FLAGS = re.compile(r"-v+|--verbose")


def requested_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names when only -v flags come before it (what a run needs); else None."""
    for arg in argv:
        if _VERBOSE_FLAGS.fullmatch(arg):
            continue
        return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``command`` only that command (the others' modules stay unimported)."""
    parser = argparse.ArgumentParser(
        prog="llm-tpu",
        description="Private LLM chat appliance for Sophgo BM1684X boxes (and any CPU for development).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def report_error(err: ApplianceError) -> None:
    print(f"error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(requested_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ApplianceError as err:
        report_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
