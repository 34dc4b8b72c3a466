"""`llm-tpu version`: versions of the appliance and of what it runs on."""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata

from appliance import __version__


def versions() -> dict[str, str]:
    out = {
        "llm-tpu-appliance": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for dist in ("torch", "transformers", "tokenizers", "aiohttp", "textual", "sophon"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


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
