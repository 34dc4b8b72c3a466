"""First boot, settings, parsing edge cases and the systemd units."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.fake_board import FakeBoard

from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ConfigError, ProvisioningError
from provisioning.firstboot import run_firstboot
from provisioning.memory_edit import parse_print_output
from provisioning.needs import needs_for_model
from provisioning.settings import load_settings
from provisioning.state import ProvisionState

ROOT = Path(__file__).resolve().parents[1]
BMODEL = ROOT / "tests/fixtures/tiny-qwen2/tiny-qwen2_bf16_seq64_1dev.bmodel"


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    monkeypatch.setenv("FAKE_BOARD_SYSROOT", str(tmp_path))
    return FakeBoard(tmp_path)


def test_firstboot_runs_once(board: FakeBoard) -> None:
    settings = ProvisioningSettings(sysroot=board.root, memory_edit=board.kit, model=str(BMODEL))
    first = run_firstboot(settings)
    assert first["exit_code"] == 0 and first["action"] == "unchanged"  # a tiny model fits the factory layout
    assert (settings.state_dir / "firstboot.done").exists()
    again = run_firstboot(settings)
    assert again["action"] == "skipped"
    assert [e["event"] for e in ProvisionState(settings).history()] == ["firstboot"]


def test_firstboot_failure_leaves_no_stamp(board: FakeBoard) -> None:
    settings = ProvisioningSettings(sysroot=board.root, memory_edit=board.root / "nowhere", model=str(BMODEL))
    result = run_firstboot(settings)
    assert result["exit_code"] != 0 and result["action"] == "failed"
    assert not (settings.state_dir / "firstboot.done").exists()


def test_needs_match_model_tool_figures() -> None:
    needs = needs_for_model(str(BMODEL), ProvisioningSettings())
    info = (BMODEL.parent / (BMODEL.name + ".info.txt")).read_text()
    assert f"device mem size: {needs.device_mem_bytes} " in info
    assert needs.io_alone_bytes > 0 and needs.total_mib >= 256  # io_alone KV + the 256 MiB margin


def test_vendor_threshold_disagreement_is_reported() -> None:
    from provisioning.needs import needs_from_figures

    n = needs_from_figures(3000, name="qwen1.5-7b_int4_1dev")
    n = type(n)(**{**n.__dict__, "quantization": "int4"})
    assert n.vendor_threshold_mib == 4608 and "needs 3000 MiB (less)" in (n.vendor_note() or "")


def test_settings_from_yaml_and_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "appliance.yaml"
    cfg.write_text("server: {}\nprovisioning:\n  cpu_reserve_mib: 5000\n  vpp_reserve_mib: 512\n")
    s = load_settings(cfg, sysroot=tmp_path)
    assert s.cpu_reserve_mib == 5000 and s.vpp_reserve_mib == 512 and s.sysroot == tmp_path
    cfg.write_text("provisioning:\n  cpu_reserve_mib: -1\n")
    with pytest.raises(ConfigError, match=r"provisioning\.cpu_reserve_mib"):
        load_settings(cfg)


def test_print_output_without_maxima_is_a_clear_error() -> None:
    with pytest.raises(ProvisioningError, match="cannot find boot file"):
        parse_print_output("INFO: version: 2.12\nError: cannot find boot file\n")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify() -> None:
    units = [ROOT / "systemd/llm-tpu-firstboot.service", ROOT / "systemd/llm-tpu-provision-verify.service"]
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    problems = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and "/usr/bin/llm-tpu is not executable" not in line
    ]
    assert not problems, problems
    for unit in units:
        text = unit.read_text()
        assert "Type=oneshot" in text and "ConditionPathExists=" in text
