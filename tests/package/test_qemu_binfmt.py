"""qemu_binfmt (tests/support/debian_chroot.py) for real: the kernel's binfmt_misc table, changed only while
someone uses emulation and restored by the last user out, also when two processes overlap (a build and a
test, or two helpers' runs). Part of `make test-arm64` (it installs qemu-user-static when missing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.debian_chroot import SYSTEM_PATH, qemu_binfmt

pytestmark = [pytest.mark.package, pytest.mark.arm64]

BINFMT = Path("/proc/sys/fs/binfmt_misc")
ENTRY = BINFMT / "qemu-aarch64"
SUPPORT = Path(__file__).resolve().parents[1]
HOLDER = f"""
import sys, time
sys.path.insert(0, {str(SUPPORT)!r})
from support.debian_chroot import qemu_binfmt
with qemu_binfmt("arm64"):
    print("in", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def _state() -> str:
    if not (BINFMT / "register").exists():
        return "not mounted"
    return ENTRY.read_text().splitlines()[0] if ENTRY.exists() else "no entry"


def _enabled() -> bool:
    return _state() == "enabled"


def test_registration_lasts_until_the_last_user_leaves_and_is_then_undone() -> None:
    before = _state()
    other = None
    try:
        with qemu_binfmt("arm64"):  # first in: registers
            assert _enabled()
            other = subprocess.Popen(
                [sys.executable, "-c", HOLDER, "4"],
                stdout=subprocess.PIPE,
                text=True,
                env={"PATH": SYSTEM_PATH},
            )
            assert other.stdout is not None and other.stdout.readline().strip() == "in"
            with qemu_binfmt("arm64"):  # nested in one process
                assert _enabled()
            assert _enabled()
        # First out, while the other process still uses emulation: nothing undone yet.
        assert _enabled(), "the registration went away under another user"
        assert other.wait(timeout=30) == 0
    finally:
        if other is not None and other.poll() is None:
            other.kill()
    assert _state() == before  # the last one out restored the table
