"""`llm-tpu`: the one command line of the appliance.

Each subcommand lives in its own module with ``register(subparsers)``; the module sets
``func`` on its parser, which receives the parsed args and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from appliance.errors import ApplianceError

# Modules that add subcommands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "appliance.cli.chat_cmd",
    "appliance.cli.ask_cmd",
    "appliance.cli.models_cmd",
    "appliance.cli.bench_cmd",
    "appliance.cli.serve_cmd",
    "appliance.cli.status_cmd",
    "appliance.cli.config_cmd",
    "appliance.cli.version_cmd",
    "appliance.cli.provision_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-tpu",
        description="Private LLM chat appliance for Sophgo BM1684X boxes (and any CPU for development).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def report_error(err: ApplianceError) -> None:
    print(f"error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
