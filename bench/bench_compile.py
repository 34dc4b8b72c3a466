"""Compile time of the embedded SmolLM2-135M-Instruct (seq 512, --sample) with `llm-tpu models compile`'s
driver: bf16 and w4bf16, wall time, peak scratch and the peak RSS of any process involved.

Target (issue 14): under 60 s on 2 cores, at least 3x faster than the vendor's llm_convert (106 s for
seq 256 on this machine, compile-facts.md; the vendor route needs a cp310 torch and is not run here).
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from appliance.compile.driver import compile_bmodel
from appliance.compile.plan import BuildOptions
from appliance.compile.sources import resolve_source


def main() -> None:
    src, _ = resolve_source("embedded")
    for quant in ("bf16", "w4bf16"):
        with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
            t0 = time.monotonic()
            res = compile_bmodel(
                src, BuildOptions(quant, 512, True), Path(tmp) / "work", Path(tmp) / "out.bmodel"
            )
            wall = time.monotonic() - t0
            size = res.bmodel.stat().st_size
        rss_mb = (
            max(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            )
            / 1024
        )
        print(
            f"compile smollm2-135m {quant:6} seq512 --sample: {wall:5.1f} s, {res.nets_compiled} nets, "
            f"peak scratch {res.peak_scratch_bytes / 1e9:.2f} GB, peak RSS {rss_mb:.0f} MB, bmodel {size / 1e6:.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
