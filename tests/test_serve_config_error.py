"""A broken configuration stops `llm-tpu serve` once with EX_CONFIG (78), which llm-tpu.service lists in
RestartPreventExitStatus=: systemd does not restart-loop it, and the journal has file, key and reason."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "systemd/llm-tpu.service"


def test_broken_config_exits_with_the_code_the_unit_does_not_restart(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text("scheduler:\n  queue_size: many\n")
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli.main", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    assert str(run.returncode) in unit["Service"]["RestartPreventExitStatus"].split()
    assert run.returncode == 78
    assert str(config) in run.stderr and "queue_size" in run.stderr and "Traceback" not in run.stderr
    # `config check` keeps its own exit code (2) for scripts.
    check = subprocess.run(
        [sys.executable, "-m", "appliance.cli.main", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 2 and "queue_size" in check.stderr
