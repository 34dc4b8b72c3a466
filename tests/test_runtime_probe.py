"""`llm-tpu status` names the engines this machine can run, and the next step when it can run none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.engine.select import RuntimeProbe, probe_runtimes


def test_next_step_only_when_no_engine_can_run() -> None:
    nothing = RuntimeProbe(tpu_devices=(), libsophon=False, sail=False, torch=False)
    step = nothing.next_step()
    assert step is not None and "libsophon" in step and "model.engine: host" in step
    assert "no TPU device" in nothing.summary() and "no torch" in nothing.summary()
    device_only = RuntimeProbe(tpu_devices=("/dev/bm-sophon0",), libsophon=False, sail=False, torch=False)
    assert "apt install libsophon" in (device_only.next_step() or "")
    assert RuntimeProbe(("/dev/bm-sophon0",), libsophon=True, sail=False, torch=False).next_step() is None
    assert RuntimeProbe((), libsophon=False, sail=False, torch=True).next_step() is None


def test_status_without_a_service_still_reports_the_runtime(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli.main", "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.startswith("runtime "), run.stdout
    assert ("torch (host engine)" in run.stdout) == probe_runtimes().torch
    assert "error:" in run.stderr
