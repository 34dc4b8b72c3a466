"""Provisioning under concurrent use and on bad boards (issue 9 item 2), on the fake SE7 board tree.

Real processes race for real: ten `llm-tpu provision apply` subprocesses at once on one fake board,
the memory_edit.sh stand-in doing the work; a read-only /boot is a real read-only bind mount.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_board import FakeBoard, Heaps

from appliance.cli.main import main
from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import UnsupportedBoard
from provisioning import memory_edit
from provisioning.lock import provision_lock
from provisioning.state import ProvisionState

LLM_TPU = str(Path(sys.executable).with_name("llm-tpu"))
NEED = ("--need-mib", "7000", "--largest-mib", "3500")
FIXTURES = Path(__file__).parent / "fixtures"
FACTORY = Heaps()


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    monkeypatch.setenv("FAKE_BOARD_SYSROOT", str(tmp_path))
    return FakeBoard(tmp_path)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(board: FakeBoard, *args: str) -> tuple[int, dict, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["provision", *args, "--sysroot", str(board.root), "--memory-edit", str(board.kit), "--json"]
        )
    text = out.getvalue().strip()
    return code, json.loads(text) if text else {}, err.getvalue()


def spawn(board: FakeBoard, *args: str) -> subprocess.Popen[str]:
    cmd = [
        LLM_TPU,
        "provision",
        *args,
        "--sysroot",
        str(board.root),
        "--memory-edit",
        str(board.kit),
        "--json",
    ]
    env = {**os.environ, "FAKE_BOARD_SYSROOT": str(board.root)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("round_", range(3))
def test_ten_parallel_applies_keep_the_factory_image_recoverable(board: FakeBoard, round_: int) -> None:
    factory = sha(board.boot_image)
    # two different plans race: each re-plan on top of a staged change must keep the factory backup
    needs = [("--need-mib", "7000", "--largest-mib", "3500"), ("--need-mib", "6500", "--largest-mib", "3300")]
    procs = [spawn(board, "apply", *needs[i % 2]) for i in range(10)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
        assert json.loads(out)["apply"]["action"] in ("staged", "already-staged")
    state = ProvisionState(ProvisioningSettings(sysroot=board.root, memory_edit=board.kit))
    pending = state.pending()
    assert pending is not None and pending.old_sha256 == factory
    backups = sorted(state.backup_dir.iterdir())
    assert [sha(b) for b in backups] == [factory], "exactly one backup: the factory image"
    assert not list((board.root / "boot").glob(".emmcboot.itb.llm-tpu-*"))
    code, _, err = cli(board, "rollback")
    assert code == 0, err
    assert sha(board.boot_image) == factory
    assert board.reboot() == FACTORY


def test_second_run_reports_who_holds_the_lock(board: FakeBoard) -> None:
    settings = ProvisioningSettings(sysroot=board.root, memory_edit=board.kit)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with provision_lock(settings, "provision apply (test holder)"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        proc = spawn(board, "apply", *NEED, "--lock-timeout", "0.5")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "Traceback" not in err
        assert f"pid {os.getpid()}" in err and "provision apply (test holder)" in err
        assert "lock" in err
        # a waiting run goes ahead once the holder is done
        proc = spawn(board, "apply", *NEED, "--lock-timeout", "60")
        assert proc.stderr is not None
        first = proc.stderr.readline()  # printed while it waits, before we let go
        assert first.startswith("waiting for the provisioning lock held by pid"), first
        release.set()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        release.set()
        t.join()


def _corrupt_kernel(board: FakeBoard) -> None:
    data = bytearray(board.boot_image.read_bytes())
    kernel = (board.root / "build/Image").read_bytes()
    at = data.find(kernel[:256])
    assert at > 0
    data[at + 1000] ^= 0xFF  # the kernel's crc32 in the FIT no longer matches
    board.boot_image.write_bytes(bytes(data))


def test_current_image_with_a_bad_crc_is_not_edited(board: FakeBoard) -> None:
    _corrupt_kernel(board)
    before = board.boot_image.read_bytes()
    code, _, err = cli(board, "apply", *NEED)
    assert code != 0 and "Traceback" not in err
    assert "the current boot image" in err and "crc32" in err and "nothing was changed" in err
    assert board.boot_image.read_bytes() == before
    state = ProvisionState(ProvisioningSettings(sysroot=board.root, memory_edit=board.kit))
    assert state.pending() is None and not (board.root / "run/reboot-required").exists()
    assert not state.backup_dir.exists() or not any(state.backup_dir.iterdir())


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_read_only_boot_is_a_clear_error(board: FakeBoard) -> None:
    before = board.boot_image.read_bytes()
    with read_only(board.root / "boot"):
        code, _, err = cli(board, "apply", *NEED)
    assert code == 1 and "Traceback" not in err
    assert "read-only" in err and "/boot" in err and "hint:" in err
    assert board.boot_image.read_bytes() == before
    assert ProvisionState(ProvisioningSettings(sysroot=board.root)).pending() is None
    # and a rollback onto a read-only /boot says the same
    assert cli(board, "apply", *NEED)[0] == 0
    with read_only(board.root / "boot"):
        code, _, err = cli(board, "rollback")
    assert code == 1 and "read-only" in err and "Traceback" not in err


def test_rollback_before_reboot_removes_the_reboot_marker(board: FakeBoard) -> None:
    marker = board.root / "run/reboot-required"
    assert cli(board, "apply", *NEED)[0] == 0
    assert marker.exists()
    assert cli(board, "rollback")[0] == 0
    assert not marker.exists() and not marker.with_name("reboot-required.pkgs").exists()
    # another package's reboot request stays
    assert cli(board, "apply", *NEED)[0] == 0
    pkgs = marker.with_name("reboot-required.pkgs")
    pkgs.write_text(pkgs.read_text() + "linux-image-arm64\n")
    assert cli(board, "rollback")[0] == 0
    assert marker.exists() and pkgs.read_text().split() == ["linux-image-arm64"]


def test_rollback_after_commit_updates_committed(board: FakeBoard) -> None:
    assert cli(board, "apply", *NEED)[0] == 0
    board.reboot()
    code, data, _ = cli(board, "verify")
    assert data["outcome"] == "committed"
    settings = ProvisioningSettings(sysroot=board.root)
    committed = ProvisionState(settings).committed()
    assert committed is not None and committed["layout"]["npu"] == 7000
    code, data, err = cli(board, "rollback")
    assert code == 0, err
    committed = ProvisionState(settings).committed()
    assert committed is not None
    assert committed["layout"] == {"npu": FACTORY.npu, "vpu": FACTORY.vpu, "vpp": FACTORY.vpp}
    assert committed.get("rolled_back_from", {}).get("npu") == 7000
    assert (board.root / "run/reboot-required").exists()  # the restored image needs a reboot
    assert board.reboot() == FACTORY
    code, data, _ = cli(board, "status")
    assert data["committed"]["layout"]["npu"] == FACTORY.npu


def test_bm1688_memory_edit_transcript_is_an_unsupported_board() -> None:
    text = (FIXTURES / "memory_edit/bm1688_se9_print.txt").read_text()
    with pytest.raises(UnsupportedBoard) as err:
        memory_edit.parse_print_output(text)
    assert err.value.message.startswith("unsupported board: ") and "BM1688" in err.value.message
    assert err.value.exit_code == 2


def test_check_on_an_se9_says_unsupported_board(board: FakeBoard) -> None:
    board.boot_image.rename(board.root / "boot/boot.itb")
    (board.root / "proc/device-tree/info/file-name").write_bytes(b"bm1688_se9_v1.0.dtb\x00")
    code, data, err = cli(board, "check", "--need-mib", "2000")
    assert code == 2 and data["verdict"] == "unsupported"
    assert data["reasons"][0].startswith("unsupported board: ")
    for action in (["plan", "--need-mib", "2000"], ["apply", *NEED]):
        code, _, err = cli(board, *action)
        assert code == 2 and err.startswith("error: unsupported board: ") and "Traceback" not in err
    assert not (board.root / "boot/emmcboot.itb").exists()
