"""`llm-tpu version`: versions of the appliance and of what it runs on."""

from __future__ import annotations

import argparse
import json

from appliance.versions import versions


def run(args: argparse.Namespace) -> int:
    info = versions()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "version", help="print versions", description="Print versions of the appliance and its stack."
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
