"""`llm-tpu serve`: run the inference service (what systemd's llm-tpu.service starts)."""

from __future__ import annotations

import argparse
import asyncio

from appliance.cli.options import add_devid_option
from appliance.config import load_config
from appliance.engine.options import ENGINE_CHOICES
from appliance.errors import ConfigError
from appliance.service.systemd_integration import setup_logging
from provisioning.board import tpu_status
from provisioning.model_admin import StoreAdmin

# sysexits.h EX_CONFIG: llm-tpu.service lists it in RestartPreventExitStatus=, so a broken
# configuration stops the service once with its message in the journal instead of a restart loop.
EX_CONFIG = 78


def run(args: argparse.Namespace) -> int:
    try:
        return _serve(args)
    except ConfigError as err:
        err.exit_code = EX_CONFIG
        raise


def _serve(args: argparse.Namespace) -> int:
    from appliance.service.server import run_service

    overrides = {
        "server.socket_path": args.socket,
        "model.ref": args.model,
        "model.engine": args.engine,
        "model.devices": list(args.devid) if args.devid else None,
    }
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        overrides.update(
            {"server.tcp.enabled": True, "server.tcp.host": host or "127.0.0.1", "server.tcp.port": port}
        )
    if args.token_file:
        overrides["server.tcp.token_file"] = args.token_file
    loaded = load_config(args.config, overrides=overrides)
    level = "debug" if args.verbose >= 2 else ("info" if args.verbose == 1 else loaded.config.logging.level)
    setup_logging(level)
    return asyncio.run(run_service(loaded, device_probe=tpu_status, model_admin=StoreAdmin()))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the inference service",
        description="Serve the configured model over HTTP on a Unix socket (Ollama and OpenAI APIs), "
        "optionally also on TCP with a bearer token. Runs until SIGTERM, then drains. Under systemd it "
        "reports READY/STATUS/WATCHDOG, accepts socket activation and logs to the journal.",
    )
    p.add_argument("--config", metavar="PATH", help="main config file (default /etc/llm-tpu/appliance.yaml)")
    p.add_argument("--socket", metavar="PATH", help="Unix socket path (overrides server.socket_path)")
    p.add_argument("--model", metavar="REF", help="model name or directory (overrides model.ref)")
    p.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        help="engine (overrides model.engine)",
    )
    add_devid_option(p)
    p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (needs a token file)")
    p.add_argument("--token-file", metavar="PATH", help="bearer token file for TCP (server.tcp.token_file)")
    p.set_defaults(func=run)
