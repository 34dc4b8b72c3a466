"""The unit files pass `systemd-analyze verify` (stderr included) and keep their hardening."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
EXEC = "/usr/bin/llm-tpu"


def _root(tmp_path: Path, service_text: str | None = None) -> Path:
    """A root with the system's units, our units and a stand-in for the packaged executable."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exe = root / EXEC.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for unit in ("llm-tpu.service", "llm-tpu.socket"):
        shutil.copy(UNITS / unit, root / "etc/systemd/system" / unit)
    if service_text is not None:
        (root / "etc/systemd/system/llm-tpu.service").write_text(service_text)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "llm-tpu.service", "llm-tpu.socket"],
        capture_output=True,
        text=True,
        cwd=root,
    )


def _units(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_verify_is_clean_and_can_fail(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: run scripts/bootstrap.sh (Debian package systemd)")
    ok = _verify(_root(tmp_path / "a"))
    assert ok.returncode == 0 and ok.stderr == "" and ok.stdout == "", ok.stderr
    broken = (UNITS / "llm-tpu.service").read_text().replace("Type=notify", "Type=notifyy")
    bad = _verify(_root(tmp_path / "b", broken))
    assert "service type" in bad.stderr  # exit code 0 here: only stderr shows it, hence the check above


def test_security_exposure_is_low(tmp_path: Path) -> None:
    root = _root(tmp_path)
    run = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--root={root}",
            "--threshold=30",
            "llm-tpu.service",
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    line = next(x for x in run.stdout.splitlines() if "Overall exposure level" in x)
    print(line)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.5


def test_service_contract() -> None:
    service = _units((UNITS / "llm-tpu.service").read_text())
    s = service["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["ExecStart"].split()[:2] == [EXEC, "serve"]
    assert s["User"] == s["Group"] == "llm-tpu"
    assert int(s["WatchdogSec"]) > 0 and s["Restart"] == "on-failure"
    assert int(service["Unit"]["StartLimitBurst"]) > 0
    assert s["RuntimeDirectory"] == "llm-tpu" and s["RuntimeDirectoryPreserve"] == "yes"
    assert s["StateDirectory"] == "llm-tpu"
    assert s.get("PrivateDevices", "no") == "no"  # would hide /dev/bm-sophon*
    text = (UNITS / "llm-tpu.service").read_text()
    for node in ("/dev/bm-sophon0", "/dev/bmdev-ctl"):
        assert f"DeviceAllow={node} rw" in text
    sock = _units((UNITS / "llm-tpu.socket").read_text())["Socket"]
    assert sock["ListenStream"] == "/run/llm-tpu/llm.sock"
    assert sock["SocketMode"] == "0660" and sock["SocketGroup"] == "llm-tpu"
