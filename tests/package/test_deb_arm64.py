"""The arm64 package installs from the signed repository in an arm64 Debian 12 chroot under qemu-user
and its CLI runs there (`make test-arm64`: slow under emulation, so not part of `make test`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.debian_chroot import Chroot, ChrootSpec, qemu_binfmt

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
KEYRING = "/usr/share/keyrings/llm-tpu-appliance.gpg"

pytestmark = [pytest.mark.package, pytest.mark.arm64]


def test_arm64_package_installs_and_runs_under_qemu(tmp_path: Path) -> None:
    if not list(DIST.glob("llm-tpu-appliance_*_arm64.deb")):
        pytest.fail("no arm64 package in dist/: run `make test-arm64` (it runs make deb-arm64 and make repo)")
    with qemu_binfmt("arm64"):
        box = Chroot.create(ChrootSpec("bookworm", "arm64"), tmp_path / "root")
        try:
            with box:
                box.copy_in(DIST / "repo", "/srv/repo")
                box.copy_in(DIST / "repo/llm-tpu-appliance.gpg", KEYRING)
                box.path("/etc/apt/sources.list.d/llm-tpu-appliance.list").write_text(
                    f"deb [signed-by={KEYRING}] file:/srv/repo stable main\n"
                )
                box.run(["apt-get", "update", "-q"], capture_output=True)
                started = time.monotonic()
                box.run(["apt-get", "install", "-y", "-q", "llm-tpu-appliance"], capture_output=True)
                print(f"arm64: apt-get install under qemu: {time.monotonic() - started:.0f} s")
                assert (
                    box.run(["dpkg", "--print-architecture"], capture_output=True).stdout.strip() == "arm64"
                )
                assert (
                    "Private LLM chat appliance" in box.run(["llm-tpu", "--help"], capture_output=True).stdout
                )
                version = box.run(["llm-tpu", "version"], capture_output=True).stdout
                assert "aarch64" in version and "3.11" in version, version
        finally:
            box.destroy()
