"""Host-side time per decode step of the bmrt engine, outside the runtime calls (launch + sync).

Runs on the BM1684X cmodel (or a device) with the tiny-qwen2 fixture. The budget is 0.6 ms: 2% of a
1.8B int4 decode step on an SE7 (31 ms). Usage: ``.venv/bin/python -m bench.bench_bmrt_host_overhead``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny-qwen2"
BUDGET_MS = 0.6


def main(argv: list[str] | None = None) -> int:
    from appliance.engine.bmrt.engine import BmrtEngine

    args = argv if argv is not None else sys.argv[1:]
    steps = int(args[0]) if args else 12
    name = args[1] if len(args) > 1 else "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"
    engine = BmrtEngine.open(FIXTURE / name, libdir=os.environ.get("LLM_TPU_BMRT_LIBDIR"), allow_cmodel=True)
    backend: Any = engine.b
    in_runtime = [0.0]
    real_run = backend.run

    def timed_run(call: Any, shapes: Any = None) -> None:
        t = time.perf_counter()
        try:
            real_run(call, shapes)
        finally:
            in_runtime[0] += time.perf_counter() - t

    backend.run = timed_run
    try:
        out = engine.prefill([39, 72, 11, 598, 0])
        token = out.token if out.token is not None else 0
        host, total = [], []
        for _ in range(steps):
            in_runtime[0] = 0.0
            t = time.perf_counter()
            out = engine.decode(token)
            dt = time.perf_counter() - t
            token = out.token if out.token is not None else 0
            total.append(dt)
            host.append(dt - in_runtime[0])
    finally:
        engine.close()
    host.sort()
    median = host[len(host) // 2] * 1e3
    print(f"bmrt decode step on {engine.info.details.get('runtime')}: {name}, {steps} steps")
    print(f"  step total (median): {sorted(total)[len(total) // 2] * 1e3:.1f} ms")
    print(f"  host-side outside launch+sync: median {median:.3f} ms, max {host[-1] * 1e3:.3f} ms")
    print(f"  budget {BUDGET_MS} ms: {'OK' if median < BUDGET_MS else 'OVER BUDGET'}")
    return 0 if median < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
