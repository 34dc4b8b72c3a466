"""`llm-tpu status`: ask the running service what it serves and how it is doing (GET /api/status)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.client import ServiceClient, find_socket


def _human(status: dict[str, Any]) -> list[str]:
    model, queue = status.get("model", {}), status.get("queue", {})
    lines = [
        f"status     {status.get('status')}",
        f"model      {model.get('name', model.get('ref'))} ({model.get('engine')})",
    ]
    if status.get("error"):
        err = status["error"]
        lines.append(f"error      {err.get('error')}")
        if err.get("hint"):
            lines.append(f"hint       {err['hint']}")
    if "max_seq_len" in model:
        lines.append(f"context    {model['max_seq_len']} tokens")
    lines.append(
        f"queue      {queue.get('running', 0)} running, {queue.get('waiting', 0)} waiting (max {queue.get('size')})"
    )
    lines.append(f"uptime     {status.get('uptime_s', 0):.0f} s")
    lines.append(f"socket     {status.get('socket')}")
    tpu = status.get("tpu", {})
    devices = tpu.get("devices") or []
    lines.append(f"tpu        {', '.join(devices) if devices else 'no TPU device nodes'}")
    for name, heap in (tpu.get("heaps") or {}).items():
        lines.append(f"  {name:<8} {heap.get('used_mib')} / {heap.get('size_mib')} MiB used")
    versions = status.get("versions", {})
    lines.append("versions   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def run(args: argparse.Namespace) -> int:
    client = ServiceClient.for_socket(find_socket(args.socket), timeout=10.0)
    status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print("\n".join(_human(status)))
    return 0 if status.get("status") == "ready" else 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show the service's model, engine, queue and TPU use",
        description="Query the running service over its Unix socket. Exit 0 when ready, 3 when loading, "
        "failed or stopping.",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="service socket (default: $LLM_TPU_SOCKET, /run/llm-tpu/llm.sock, or the user-mode socket)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (the /api/status body)")
    p.set_defaults(func=run)
