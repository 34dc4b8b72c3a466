"""`llm-tpu config check|show`: validate the configuration and print effective values with their source."""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.config import load_config

_OCTAL_KEYS = {"server.socket_mode"}


def _display(key: str, value: Any) -> Any:
    if key in _OCTAL_KEYS and isinstance(value, int):
        return f"0{value:o}"
    return value


def run_check(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)  # ConfigError names file, key and reason; main.py prints it
    files = [str(p) for p in loaded.files]
    if args.json:
        print(json.dumps({"ok": True, "files": files}))
    else:
        print("configuration is valid" + (f" ({', '.join(files)})" if files else " (built-in defaults only)"))
    return 0


def run_show(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    rows = [(key, _display(key, value), source) for key, value, source in loaded.effective()]
    if args.json:
        print(
            json.dumps(
                {
                    "files": [str(p) for p in loaded.files],
                    "values": {key: {"value": value, "source": source} for key, value, source in rows},
                },
                indent=2,
            )
        )
        return 0
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        shown = json.dumps(value) if not isinstance(value, str) else value
        print(f"{key:<{width}}  {shown}  [{source}]")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="check or show the service configuration",
        description="Configuration layers, later wins: built-in defaults, /etc/llm-tpu/appliance.yaml "
        "(or --config), conf.d/*.yaml next to it in lexical order, LLM_TPU_<SECTION>__<KEY> environment "
        "variables.",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("check", run_check, "validate the configuration; exit 2 with file, key and reason when invalid"),
        ("show", run_show, "print every effective value and the layer it came from"),
    ):
        c = csub.add_parser(name, help=text, description=text)
        c.add_argument(
            "--config", metavar="PATH", help="main config file (default /etc/llm-tpu/appliance.yaml)"
        )
        c.add_argument("--json", action="store_true", help="machine-readable output")
        c.set_defaults(func=func)
