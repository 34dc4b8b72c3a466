"""Provisioning on a fake SE7 board tree: real dtc/mkimage FIT images, the memory_edit.sh stand-in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support.fake_board import SE7_DTS, FakeBoard, Heaps

from appliance.cli.main import main
from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import BootImageError, LayoutDoesNotFit, ProvisioningError
from provisioning import apply as apply_mod
from provisioning import fit_image, memory_edit
from provisioning.board import read_board
from provisioning.layout import MemoryLayout
from provisioning.needs import needs_from_figures
from provisioning.plan import plan_layout
from provisioning.state import ProvisionState
from provisioning.verify import verify_pending


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    monkeypatch.setenv("FAKE_BOARD_SYSROOT", str(tmp_path))
    return FakeBoard(tmp_path)


@pytest.fixture
def settings(board: FakeBoard) -> ProvisioningSettings:
    return ProvisioningSettings(sysroot=board.root, memory_edit=board.kit, reboot_command=["true"])


NEED = ("--need-mib", "7000", "--largest-mib", "3500")


def cli(board: FakeBoard, *args: str) -> tuple[int, dict]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["provision", *args, "--sysroot", str(board.root), "--memory-edit", str(board.kit), "--json"]
        )
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else {}


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not str(p.relative_to(root)).startswith(("build", "opt"))
        and p.name != "lock"  # provisioning/lock.py: who holds the lock, not state
    }


def test_memory_edit_print_reports_se7_maxima(settings: ProvisioningSettings) -> None:
    report = memory_edit.run_print(settings)
    assert report.limits.as_dict() == {"npu": 7615, "vpu": 2944, "vpp": 4096}
    assert report.current == MemoryLayout(2414, 2944, 3072)
    assert report.ddr_mib == {"ddr12_size": 8192, "ddr3_size": 4096, "ddr4_size": 4096, "ddr_size": 16384}
    assert report.dts_name == f"{SE7_DTS}.dts"


def test_vendor_readme_layout_is_refused_by_memory_edit(
    settings: ProvisioningSettings, tmp_path: Path
) -> None:
    # The READMEs' -npu 7615 -vpu 3072 -vpp 3072 exceeds a standard SE7's VPU maximum (2944).
    with pytest.raises(ProvisioningError, match="vpu size 0xc0000000 error"):
        memory_edit.run_configure(settings, MemoryLayout(7615, 3072, 3072), tmp_path / "work")


def test_plan_stays_within_maxima_and_keeps_cpu_memory(settings: ProvisioningSettings) -> None:
    state = read_board(settings)
    assert state.cpu_mib == 16384 - 905 - 8430
    # 6000 MiB in 1500 MiB pieces fit today's 2414/2944/3072 (the runtime spills into vpp, vpu)
    fits = plan_layout(
        needs_from_figures(6000, 1500), state.board.limits, state.live, settings, state.cpu_mib
    )
    assert not fits.changed and fits.layout == state.live
    # a 3500 MiB allocation fits no current heap: the npu grows, vpu shrinks to keep 4 GiB for the CPU
    plan = plan_layout(
        needs_from_figures(7000, 3500), state.board.limits, state.live, settings, state.cpu_mib
    )
    assert plan.changed
    assert plan.layout == MemoryLayout(
        npu=7000, vpu=2944 - (4096 - (7049 + 8430 - (7000 + 2944 + 3072))), vpp=3072
    )
    assert plan.cpu_after_mib == 4096
    assert not state.board.limits.violations(plan.layout)
    # beyond the npu maximum the rest spills into vpp/vpu, never above a maximum
    big = plan_layout(needs_from_figures(9000, 3000), state.board.limits, state.live, settings, state.cpu_mib)
    assert big.layout.npu == 7615 and not state.board.limits.violations(big.layout)
    assert big.cpu_after_mib is not None and big.cpu_after_mib >= 4096


def test_plan_refuses_with_reasons(settings: ProvisioningSettings) -> None:
    state = read_board(settings)
    with pytest.raises(LayoutDoesNotFit, match="can give it at most"):
        plan_layout(needs_from_figures(20000), state.board.limits, state.live, settings, state.cpu_mib)
    with pytest.raises(LayoutDoesNotFit, match="vpu reservation"):
        s = settings.model_copy(update={"vpu_reserve_mib": 3000})
        plan_layout(needs_from_figures(3000), state.board.limits, state.live, s, state.cpu_mib)


def test_check_exit_codes(board: FakeBoard) -> None:
    code, data = cli(board, "check", "--need-mib", "2000")
    assert code == 0 and data["verdict"] == "fits"
    assert data["heaps"]["npu"]["size_mib"] == 2414 and data["heaps"]["npu"]["largest_free_mib"] == 2414
    code, data = cli(board, "check", "--need-mib", "9000", "--largest-mib", "3000")
    assert code == 1 and data["verdict"] == "does-not-fit"
    code, data = cli(board, "check")
    assert code == 2
    import shutil

    shutil.rmtree(board.root / "sys/kernel/debug/ion")
    code, data = cli(board, "check", "--need-mib", "2000")
    assert code == 2 and data["verdict"] == "unknown"


def test_apply_stages_verified_image_then_is_idempotent_and_verify_commits(board: FakeBoard) -> None:
    old_image = board.boot_image.read_bytes()
    code, data = cli(board, "apply", *NEED)
    assert code == 0 and data["apply"]["action"] == "staged"
    layout = MemoryLayout(**data["plan"]["layout"])
    assert board.heaps_in_boot_image() == Heaps(layout.npu, layout.vpu, layout.vpp)
    assert (board.root / "run/reboot-required").exists()
    assert "llm-tpu-appliance" in (board.root / "run/reboot-required.pkgs").read_text()
    pending = json.loads((board.root / "var/lib/llm-tpu/provision/pending.json").read_text())
    backup = board.root / pending["backup"].lstrip("/")
    assert backup.read_bytes() == old_image
    assert (board.root / "boot/emmcboot.itb.memeditBak").exists()  # the vendor tool's own backup

    before = snapshot(board.root)
    code, data = cli(board, "apply", *NEED)
    assert code == 0 and data["apply"]["action"] == "already-staged"
    assert snapshot(board.root) == before, "a second apply must write nothing"
    code, data = cli(board, "check", *NEED)
    assert code == 1 and any("is staged" in r for r in data["reasons"])

    board.reboot()
    code, data = cli(board, "verify")
    assert code == 0 and data["outcome"] == "committed"
    code, data = cli(board, "check", *NEED)
    assert code == 0
    before = snapshot(board.root)
    code, data = cli(board, "apply", *NEED)
    assert data["apply"]["action"] == "unchanged"
    assert snapshot(board.root) == before


def test_wrong_size_in_produced_image_is_caught(
    board: FakeBoard, settings: ProvisioningSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MEMORY_EDIT_SKEW", "npu:16")
    old = board.boot_image.read_bytes()
    state = read_board(settings)
    plan = plan_layout(
        needs_from_figures(7000, 3500), state.board.limits, state.live, settings, state.cpu_mib
    )
    with pytest.raises(BootImageError, match="npu 7016 MiB"):
        apply_mod.apply_plan(settings, plan, dts_name=state.board.dts_name)
    assert board.boot_image.read_bytes() == old
    assert ProvisionState(settings).pending() is None
    assert not (board.root / "run/reboot-required").exists()


def test_corrupt_image_fails_integrity(board: FakeBoard, tmp_path: Path) -> None:
    bad = tmp_path / "bad.itb"
    data = bytearray(board.boot_image.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the kernel payload: the crc32 no longer matches
    bad.write_bytes(bytes(data))
    with pytest.raises(BootImageError):
        fit_image.check_integrity(bad)
    bad.write_bytes(board.boot_image.read_bytes()[:4000])
    with pytest.raises(BootImageError):
        fit_image.check_integrity(bad)


class PowerCut(BaseException):
    pass


@pytest.mark.parametrize("point", ["intent-recorded", "temp-written", "renamed"])
def test_power_cut_leaves_old_or_new_image(
    board: FakeBoard, settings: ProvisioningSettings, point: str
) -> None:
    old = board.boot_image.read_bytes()
    state = read_board(settings)
    plan = plan_layout(
        needs_from_figures(7000, 3500), state.board.limits, state.live, settings, state.cpu_mib
    )

    def fault(step: str) -> None:
        if step == point:
            raise PowerCut(step)

    with pytest.raises(PowerCut):
        apply_mod.apply_plan(settings, plan, dts_name=state.board.dts_name, fault=fault)
    now = board.boot_image.read_bytes()
    fit_image.check_integrity(board.boot_image)
    in_image = fit_image.boot_image_layout(board.boot_image, state.board.dts_name)
    assert (now == old) == (point != "renamed")
    assert in_image == (plan.layout if point == "renamed" else plan.current)
    notes = apply_mod.recover(settings)
    assert not list(board.root.joinpath("boot").glob(".emmcboot.itb.llm-tpu-*"))
    pending = ProvisionState(settings).pending()
    if point == "renamed":
        assert pending is not None and pending.phase == "staged" and any("completed" in n for n in notes)
    else:
        assert pending is None
    # and the next apply converges
    result = apply_mod.apply_plan(settings, plan, dts_name=state.board.dts_name)
    assert result.action in ("staged", "already-staged")
    assert fit_image.boot_image_layout(board.boot_image, state.board.dts_name) == plan.layout


def test_verify_failure_rolls_back_and_keeps_profile(
    board: FakeBoard, settings: ProvisioningSettings
) -> None:
    old = board.boot_image.read_bytes()
    code, _ = cli(board, "apply", *NEED)
    assert code == 0
    board.set_heaps(Heaps())  # rebooted, but the kernel still shows the old heaps
    result = verify_pending(settings)
    assert result.outcome == "failed" and result.exit_code == 1
    assert board.boot_image.read_bytes() == old
    st = ProvisionState(settings)
    assert st.pending() is None and st.failed() is not None and st.profile() is None
    assert (board.root / "run/reboot-required").exists()


def test_rollback_command_restores_backup(board: FakeBoard) -> None:
    old = board.boot_image.read_bytes()
    cli(board, "apply", *NEED)
    assert board.boot_image.read_bytes() != old
    code, data = cli(board, "rollback")
    assert code == 0 and board.boot_image.read_bytes() == old
    code, data = cli(board, "status")
    assert data["pending"] is None
