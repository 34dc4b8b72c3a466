"""Fake boxes for the fleet (Ansible) tests: Debian root filesystems, each with its own fake board.

A box is a Debian minbase tree (tests/support/debian_chroot.py, cached tarball) with Python for Ansible,
the tools the memory_edit.sh stand-in needs, and a fake SE7 or SM7 board tree (tests/support/fake_board.py:
real FIT boot image, ION debugfs files, /proc/device-tree, /proc/meminfo, the memory_edit.sh stand-in in
/opt/memory_edit). Ansible reaches it through community.general's chroot connection: the box's root is
its ``ansible_host``.

The box's /proc is NOT the kernel's: the fake board's files live there (a real procfs would show this
machine's memory and no device tree). /dev and /run are mounted (private /dev nodes, /run as tmpfs).

Two things of a real box cannot exist in a chroot, and are played by scripts inside the box:

* the reboot: ``/opt/fakeboard/fake_board.py reboot /`` (the kernel reading the heaps from the boot
  image it boots; the role runs it through ``llm_tpu_appliance_reboot_command``);
* systemd starting ``llm-tpu.service``: ``/opt/fakeboard/service`` (re)starts ``llm-tpu serve`` in the
  background (``llm_tpu_appliance_service_control: command``) and records its pid, which
  :meth:`FleetBox.destroy` stops by that pid.

The boxes have no apt sources of their own: the package's dependencies are in the cached tarball, so a
test installs the package offline, from the .deb or from the test's own signed apt repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.debian_chroot import Chroot, ChrootSpec, host_arch
from support.fake_board import SE7_DTS, FakeBoard, Heaps

FAKE_BOARD_PY = Path(__file__).with_name("fake_board.py")
REPO = Path(__file__).resolve().parents[2]
TINY_HF = REPO / "tests/fixtures/tiny-qwen2/hf"
# Ansible's target needs python3 (python3-apt for the apt module); the memory_edit.sh stand-in needs
# dtc/fdtget and mkimage/dumpimage; the package needs adduser and ca-certificates.
BOX_PACKAGES = (
    "python3",
    "python3-apt",
    "device-tree-compiler",
    "u-boot-tools",
    "adduser",
    "ca-certificates",
)
SERVICE_SCRIPT = """#!/bin/sh
# Plays systemd for llm-tpu.service in a fake box (a chroot has no init): stop the previous
# `llm-tpu serve` by its pid, start a new one in the background.
set -u
mkdir -p /var/lib/fakeboard
pidfile=/var/lib/fakeboard/service.pid
if [ -s "$pidfile" ]; then
  kill "$(cat "$pidfile")" 2>/dev/null || true
  sleep 0.5
fi
rm -f /run/llm-tpu/llm.sock
setsid /usr/bin/llm-tpu serve </dev/null >>/var/log/llm-tpu-serve.log 2>&1 &
echo $! >"$pidfile"
"""


@dataclass
class FleetBox:
    name: str
    group: str
    chroot: Chroot
    board: FakeBoard

    @property
    def root(self) -> Path:
        return self.chroot.root

    def path(self, inside: str) -> Path:
        return self.chroot.path(inside)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.chroot.run(list(argv), check=check, capture_output=True)

    @property
    def boots(self) -> int:
        """How often the box booted (the in-box reboot script counts in build/board.json)."""
        return FakeBoard.attach(self.root).boots

    def service_pid(self) -> int | None:
        pidfile = self.path("/var/lib/fakeboard/service.pid")
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text.isdigit() else None

    def stop_service(self) -> None:
        pid = self.service_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            self.path("/var/lib/fakeboard/service.pid").unlink(missing_ok=True)

    def destroy(self) -> None:
        self.stop_service()
        self.chroot.destroy()

    def snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Every file of the box (size, mtime, and content hash where it matters), without Ansible's own
        temporary directory: what --check must leave exactly as it was."""
        out: dict[str, tuple[int, int, str]] = {}
        skip = ("root/.ansible", "tmp", "dev", "run")
        for path in self.root.rglob("*"):
            rel = str(path.relative_to(self.root))
            if rel.startswith(skip) or not path.is_file() or path.is_symlink():
                continue
            st = path.stat()
            digest = ""
            if rel.startswith(("etc", "boot", "var/lib/llm-tpu", "proc", "sys")):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = (st.st_size, st.st_mtime_ns, digest)
        return out


def box_spec(release: str, extra_packages: tuple[str, ...] = ()) -> ChrootSpec:
    return ChrootSpec(release, host_arch(), tuple(sorted({*BOX_PACKAGES, *extra_packages})))


def make_box(
    dest: Path,
    name: str,
    group: str,
    *,
    release: str = "bookworm",
    heaps: Heaps | None = None,
    ddr_gib: tuple[int, int, int] = (8, 4, 4),
    dts: str = SE7_DTS,
    extra_packages: tuple[str, ...] = (),
) -> FleetBox:
    chroot = Chroot.create(box_spec(release, extra_packages), dest)
    chroot.mount()
    # The fake board's /proc replaces the kernel's (see the module docstring).
    subprocess.run(["umount", str(dest / "proc")], check=True)
    board = FakeBoard(dest, heaps=heaps, ddr_gib=ddr_gib, dts=dts)
    chroot.copy_in(FAKE_BOARD_PY, "/opt/fakeboard/fake_board.py")
    service = chroot.path("/opt/fakeboard/service")
    service.write_text(SERVICE_SCRIPT)
    service.chmod(0o755)
    chroot.copy_in(TINY_HF, "/srv/tiny-qwen2/hf")
    # Offline box: only the sources the test adds.
    for sources in (
        chroot.path("/etc/apt/sources.list"),
        chroot.path("/etc/apt/sources.list.d/debian.sources"),
    ):
        if sources.exists():
            sources.write_text("")
    chroot.path("/etc/hostname").write_text(name + "\n")
    return FleetBox(name, group, chroot, board)


_RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)"
)


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of ansible-playbook: host -> counters (ok, changed, unreachable, failed, ...)."""
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    recap: dict[str, dict[str, int]] = {}
    for line in stdout.split("PLAY RECAP")[-1].splitlines():
        if m := _RECAP.match(line.strip()):
            recap[m[1]] = dict(zip(keys, (int(v) for v in m.groups()[1:]), strict=True))
    return recap
