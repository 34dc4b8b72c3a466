"""The arm64 package installs from the signed repository in an arm64 Debian 12 chroot under qemu-user
and its CLI runs there (`make test-arm64`: it needs the arm64 build, so it is not part of `make test`).

Real apt (the repository's signature is checked through ``signed-by=``), the real aarch64 interpreter
and venv of the package, executed by qemu-user-static; binfmt is registered for the test only and the
kernel's binfmt table is as it was afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.debian_chroot import QEMU_ARCH, Chroot, ChrootSpec, qemu_binfmt

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
KEYRING = "/usr/share/keyrings/llm-tpu-appliance.gpg"
BINFMT = Path("/proc/sys/fs/binfmt_misc")

pytestmark = [pytest.mark.package, pytest.mark.arm64]


def _binfmt_state() -> str:
    entry = BINFMT / f"qemu-{QEMU_ARCH['arm64']}"
    if not (BINFMT / "register").exists():
        return "binfmt_misc not mounted"
    return entry.read_text().splitlines()[0] if entry.exists() else "no entry"


def test_arm64_package_installs_and_runs_under_qemu(tmp_path: Path) -> None:
    packages = DIST / "repo/dists/stable/main/binary-arm64/Packages"
    if not packages.exists() or "Architecture: arm64" not in packages.read_text():
        pytest.fail(
            "no arm64 package in dist/repo: run `make test-arm64` (it runs make deb-arm64 and make repo)"
        )
    before = _binfmt_state()
    with qemu_binfmt("arm64"):
        box = Chroot.create(ChrootSpec("bookworm", "arm64"), tmp_path / "root")
        try:
            with box:
                box.copy_in(DIST / "repo", "/srv/repo")
                box.copy_in(DIST / "repo/llm-tpu-appliance.gpg", KEYRING)
                box.path("/etc/apt/sources.list.d/llm-tpu-appliance.list").write_text(
                    f"deb [signed-by={KEYRING}] file:/srv/repo stable main\n"
                )
                update = box.run(["apt-get", "update"], capture_output=True)
                assert "llm-tpu-appliance" not in update.stderr, update.stderr  # no signature warning
                started = time.monotonic()
                box.run(["apt-get", "install", "-y", "-q", "llm-tpu-appliance"], capture_output=True)
                print(f"arm64: apt-get install under qemu: {time.monotonic() - started:.0f} s")
                assert (
                    box.run(["dpkg", "--print-architecture"], capture_output=True).stdout.strip() == "arm64"
                )
                arch = box.run(
                    ["dpkg-query", "-W", "-f=${Architecture}", "llm-tpu-appliance"], capture_output=True
                )
                assert arch.stdout == "arm64"
                assert (
                    "Private LLM chat appliance" in box.run(["llm-tpu", "--help"], capture_output=True).stdout
                )
                version = box.run(["llm-tpu", "version"], capture_output=True).stdout
                assert "aarch64" in version and "3.11" in version, version
                # The bundled interpreter's own OpenSSL and the system's CA certificates.
                ssl = box.run(
                    ["/opt/llm-tpu-appliance/venv/bin/python", "-c",
                     "import ssl; print(ssl.OPENSSL_VERSION, ssl.create_default_context().cert_store_stats())"],
                    capture_output=True,
                ).stdout  # fmt: skip
                assert ssl.startswith("OpenSSL 3.0"), ssl
        finally:
            box.destroy()
    assert _binfmt_state() == before
