"""`llm-tpu status`: ask the running service what it serves and how it is doing (GET /api/status)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.client import ServiceClient, find_socket
from appliance.engine.select import RuntimeProbe, probe_runtimes
from appliance.errors import ServiceUnavailable


def _runtime_lines(probe: RuntimeProbe) -> list[str]:
    """This machine's engines: a box owner learns here that the TPU runtime is missing and what to do."""
    lines = [f"runtime    {probe.summary()}"]
    step = probe.next_step()
    if step:
        lines[0] = "runtime    no TPU runtime found: " + probe.summary()
        lines.append(f"next step  {step}")
    return lines


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
    details = model.get("engine_details") or {}
    if details:  # e.g. the host engine's runner, weights and whether its decode step is compiled
        lines.append("engine     " + ", ".join(f"{k} {v}" for k, v in details.items()))
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
    probe = probe_runtimes()
    try:
        client = ServiceClient.for_socket(find_socket(args.socket), timeout=10.0)
        status = client.status()
    except ServiceUnavailable:
        if not args.json:
            print("\n".join(_runtime_lines(probe)))
        raise
    if args.json:
        print(json.dumps({**status, "runtime": _probe_dict(probe)}, indent=2))
    else:
        print("\n".join(_human(status) + _runtime_lines(probe)))
    return 0 if status.get("status") == "ready" else 3


def _probe_dict(probe: RuntimeProbe) -> dict[str, Any]:
    return {
        "tpu_devices": list(probe.tpu_devices),
        "libsophon": probe.libsophon,
        "sail": probe.sail,
        "torch": probe.torch,
        "next_step": probe.next_step(),
    }


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
