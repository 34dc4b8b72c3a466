"""A fake Sophgo SE7 board tree under a temporary sysroot, for provisioning tests.

What it builds is real where it can be: device trees compiled with ``dtc``, a FIT boot image built with
``mkimage`` (kernel + ramdisk + two board dtbs, crc32 hashes), ION debugfs files in the documented
formats (sophgo-facts.md section 7), ``/proc/device-tree/info/file-name``, ``/proc/meminfo`` and a kit
directory whose ``memory_edit.sh`` is the test stand-in (tests/support/memory_edit_standin.py).
``reboot()`` plays the kernel: it reads the heaps from the dtb the box boots in ``/boot/emmcboot.itb``
and rewrites the ION files and MemTotal from them.

The board's facts (DDR banks, booted device tree, boot count) are kept in ``build/board.json`` so that a
board can be reopened (:meth:`FakeBoard.attach`) and rebooted from inside a fake box, where this file
runs as a script with the box's own Python: ``python3 fake_board.py reboot /``. A file
``build/boot-keeps-old-heaps`` makes the next reboots ignore the staged boot image (a box whose boot
loader did not take the new device tree), for tests of a layout that is not live after the reboot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
G4 = 1 << 32
STANDIN = Path(__file__).with_name("memory_edit_standin.py")
SE7_DTS = "bm1684x_se7_v2.0"
OTHER_DTS = "bm1684x_sm7m_v0.0"
# Memory that is neither heap nor CPU: firmware, kernel reserved, VPU firmware (MemTotal is DDR minus this).
OTHER_RESERVED_MIB = 577 + 128 + 200


@dataclass
class Heaps:
    npu: int = 2414
    vpu: int = 2944
    vpp: int = 3072


def _dts(name: str, heaps: Heaps, ddr_gib: tuple[int, int, int]) -> str:
    d12, d3, d4 = ddr_gib

    def reg(index: int, start: int, size_mib: int) -> str:
        size = size_mib * MIB
        return f"<{index + start // G4:#x} {start % G4:#x} {size // G4:#x} {size % G4:#x}>"

    npu_start = (512 + 64 + 1) * MIB
    ion = []
    for heap, index, start in (
        ("npu", 1, npu_start),
        ("vpu", 3, d3 * (1 << 30) - heaps.vpu * MIB),
        ("vpp", 4, d4 * (1 << 30) - heaps.vpp * MIB),
    ):
        size = getattr(heaps, heap)
        if size:
            phandle = {"npu": 0x10, "vpu": 0x11, "vpp": 0x12}[heap]
            ion.append(
                f'\t\tion_{heap}_mem {{\n\t\t\tcompatible = "{heap}-region";\n'
                f"\t\t\treg = {reg(index, start, size)};\n\t\t\tphandle = <{phandle:#x}>;\n\t\t}};\n"
            )
    return f"""/dts-v1/;
/ {{
\t#address-cells = <0x2>;
\t#size-cells = <0x2>;
\tmodel = "Sophgo SE7 (fake board for tests)";
\tinfo {{
\t\tfile-name = "{name}.dtb";
\t}};
\tmemory {{
\t\tdevice_type = "memory";
\t\treg = <0x1 0x0 {d12 // 4:#x} {(d12 % 4) << 30:#x} 0x3 0x0 {d3 // 4:#x} {(d3 % 4) << 30:#x} 0x4 0x0 {d4 // 4:#x} {(d4 % 4) << 30:#x}>;
\t}};
\treserved-memory {{
\t\t#address-cells = <0x2>;
\t\t#size-cells = <0x2>;
\t\tranges;
\t\tarmfw_mem {{
\t\t\treg = <0x1 0x0 0x0 0x20000000>;
\t\t\tno-map;
\t\t}};
\t\tarm_mem {{
\t\t\treg = <0x1 0x20000000 0x0 0x4000000>;
\t\t\tno-map;
\t\t}};
\t\tsmmu_mem {{
\t\t\treg = <0x1 0x24000000 0x0 0x100000>;
\t\t\tno-map;
\t\t}};
\t\tvpu_mem {{
\t\t\treg = <0x3 0x0 0x0 0x8000000>;
\t\t\tno-map;
\t\t}};
{"".join(ion)}\t}};
\tbitmain-ion {{
\t\tcompatible = "bitmain,bitmain-ion";
\t}};
\tbmtpu {{
\t\tcompatible = "bitmain,tpu-1684";
\t\tmemory-region = <0x1 0x2 0x3 0x10 0x12>;
\t}};
\tvdec {{
\t\tcompatible = "bitmain,bitmain-vdec";
\t}};
}};
"""


ITS = """/dts-v1/;
/ {
\tdescription = "fake SE7 boot image (tests)";
\t#address-cells = <1>;
\timages {
\t\tkernel-1 {
\t\t\tdescription = "sophon kernel";
\t\t\tdata = /incbin/("./Image");
\t\t\ttype = "kernel";
\t\t\tarch = "arm64";
\t\t\tos = "linux";
\t\t\tcompression = "none";
\t\t\tload = <0x280000>;
\t\t\tentry = <0x280000>;
\t\t\thash-1 { algo = "crc32"; };
\t\t};
\t\tramdisk-1 {
\t\t\tdescription = "sophon ramdisk";
\t\t\tdata = /incbin/("./ramdisk.cpio");
\t\t\ttype = "ramdisk";
\t\t\tarch = "arm64";
\t\t\tos = "linux";
\t\t\tcompression = "none";
\t\t\tload = <0x3000000>;
\t\t\thash-1 { algo = "crc32"; };
\t\t};
\t\tfdt-1 {
\t\t\tdescription = "SE7_DTS";
\t\t\tdata = /incbin/("./SE7_DTS.dtb");
\t\t\ttype = "flat_dt";
\t\t\tarch = "arm64";
\t\t\tcompression = "none";
\t\t\thash-1 { algo = "crc32"; };
\t\t};
\t\tfdt-2 {
\t\t\tdescription = "OTHER_DTS";
\t\t\tdata = /incbin/("./OTHER_DTS.dtb");
\t\t\ttype = "flat_dt";
\t\t\tarch = "arm64";
\t\t\tcompression = "none";
\t\t\thash-1 { algo = "crc32"; };
\t\t};
\t};
\tconfigurations {
\t\tdefault = "config-1";
\t\tconfig-1 { kernel = "kernel-1"; ramdisk = "ramdisk-1"; fdt = "fdt-1"; };
\t\tconfig-2 { kernel = "kernel-1"; ramdisk = "ramdisk-1"; fdt = "fdt-2"; };
\t};
};
""".replace("OTHER_DTS", OTHER_DTS).replace("SE7_DTS", SE7_DTS)


class FakeBoard:
    """An SE7 (16 GB: DDR 8+4+4 GiB) with the factory layout unless told otherwise. ``dts`` chooses the
    device tree the box boots: the SE7's (fdt-1) or the SM7's (fdt-2) of the same FIT image."""

    def __init__(
        self,
        root: Path,
        heaps: Heaps | None = None,
        ddr_gib: tuple[int, int, int] = (8, 4, 4),
        dts: str = SE7_DTS,
    ):
        self.root = root
        self.ddr_gib = ddr_gib
        self.dts = dts
        self.kit = root / "opt/memory_edit"
        build = root / "build"
        for d in (build, root / "boot", self.kit, root / "proc/device-tree/info", root / "run"):
            d.mkdir(parents=True, exist_ok=True)
        (build / "Image").write_bytes(os.urandom(64 * 1024))
        (build / "ramdisk.cpio").write_bytes(os.urandom(32 * 1024))
        heaps = heaps or Heaps()
        for name in (SE7_DTS, OTHER_DTS):
            (build / f"{name}.dts").write_text(_dts(name, heaps, ddr_gib))
            subprocess.run(
                [
                    "dtc",
                    "-q",
                    "-I",
                    "dts",
                    "-O",
                    "dtb",
                    "-o",
                    str(build / f"{name}.dtb"),
                    str(build / f"{name}.dts"),
                ],
                check=True,
            )
        (build / "multi.its").write_text(ITS)
        subprocess.run(
            ["mkimage", "-D", "-q -I dts -O dtb -p 500", "-f", "multi.its", "emmcboot.itb"],
            cwd=build,
            check=True,
            capture_output=True,
        )
        shutil.copy(build / "emmcboot.itb", self.boot_image)
        shutil.copy(build / "multi.its", root / "boot/multi.its")
        (root / "proc/device-tree/info/file-name").write_bytes(f"{dts}.dtb\x00".encode())
        shutil.copy(STANDIN, self.kit / "memory_edit.sh")
        (self.kit / "memory_edit.sh").chmod(0o755)
        (root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
        self.boots = 0
        self.set_heaps(heaps)

    @classmethod
    def attach(cls, root: Path) -> FakeBoard:
        """The board built earlier under ``root`` (from ``build/board.json``)."""
        facts = json.loads((root / "build/board.json").read_text())
        board = cls.__new__(cls)
        board.root, board.kit = root, root / "opt/memory_edit"
        board.ddr_gib = (facts["ddr_gib"][0], facts["ddr_gib"][1], facts["ddr_gib"][2])
        board.dts, board.boots = facts["dts"], facts["boots"]
        return board

    def _save(self) -> None:
        facts = {"ddr_gib": list(self.ddr_gib), "dts": self.dts, "boots": self.boots}
        (self.root / "build/board.json").write_text(json.dumps(facts))

    @property
    def boot_image(self) -> Path:
        return self.root / "boot/emmcboot.itb"

    @property
    def ddr_mib(self) -> int:
        return sum(self.ddr_gib) * 1024

    def set_heaps(self, heaps: Heaps, used_mib: int = 0) -> None:
        """Write the ION debugfs files and MemTotal the kernel would show with these heaps."""
        ion = self.root / "sys/kernel/debug/ion"
        shutil.rmtree(ion, ignore_errors=True)
        for heap in ("npu", "vpu", "vpp"):
            size = getattr(heaps, heap) * MIB
            if not size:
                continue
            d = ion / f"bm_{heap}_heap_dump"
            d.mkdir(parents=True)
            (d / "total_mem").write_text(f"{size}\n")
            used = used_mib * MIB if heap == "npu" else 0
            rate = used * 100 // size
            (d / "summary").write_text(
                f"[0] {heap} heap size:{size} bytes, used:{used} bytes        usage rate:{rate}%, "
                f"memory usage peak {used} bytes\n"
            )
        mem_total = (self.ddr_mib - OTHER_RESERVED_MIB - heaps.npu - heaps.vpu - heaps.vpp) * 1024
        (self.root / "proc/meminfo").write_text(
            f"MemTotal:       {mem_total} kB\nMemFree:        {mem_total // 2} kB\n"
        )
        self.boots += 1
        (self.root / "proc/sys/kernel/random/boot_id").write_text(
            f"00000000-0000-0000-0000-{self.boots:012d}\n"
        )
        self._save()

    def live_heaps(self) -> Heaps:
        """The heaps the running (fake) kernel reports."""
        ion = self.root / "sys/kernel/debug/ion"
        sizes = {}
        for heap in ("npu", "vpu", "vpp"):
            total = ion / f"bm_{heap}_heap_dump/total_mem"
            sizes[heap] = int(total.read_text()) // MIB if total.exists() else 0
        return Heaps(**sizes)

    def heaps_in_boot_image(self) -> Heaps:
        """The heap sizes the box would get when booting /boot/emmcboot.itb (the fdt of its board)."""
        tmp = self.root / "build/booted.dtb"
        index = "2" if self.dts == SE7_DTS else "3"  # kernel, ramdisk, fdt-1 (SE7), fdt-2 (SM7)
        subprocess.run(
            ["dumpimage", "-T", "flat_dt", "-p", index, "-o", str(tmp), str(self.boot_image)],
            check=True,
            capture_output=True,
        )
        sizes = {}
        for heap in ("npu", "vpu", "vpp"):
            proc = subprocess.run(
                ["fdtget", "-t", "x", str(tmp), f"/reserved-memory/ion_{heap}_mem", "reg"],
                capture_output=True,
                text=True,
            )
            cells = [int(x, 16) for x in proc.stdout.split()] if proc.returncode == 0 else [0, 0, 0, 0]
            sizes[heap] = (cells[2] * G4 + cells[3]) // MIB
        return Heaps(**sizes)

    def reboot(self) -> Heaps:
        keeps_old = (self.root / "build/boot-keeps-old-heaps").exists()
        heaps = self.live_heaps() if keeps_old else self.heaps_in_boot_image()
        self.set_heaps(heaps)
        (self.root / "run").mkdir(exist_ok=True)
        for p in (self.root / "run").iterdir():  # /run is a tmpfs: empty after a reboot
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return heaps


def main(argv: list[str]) -> int:
    """``fake_board.py reboot ROOT``: play the reboot of the board under ROOT (``/`` inside a fake box)."""
    if len(argv) != 2 or argv[0] != "reboot":
        print("usage: fake_board.py reboot ROOT", file=sys.stderr)
        return 2
    heaps = FakeBoard.attach(Path(argv[1])).reboot()
    print(f"rebooted: npu {heaps.npu} MiB, vpu {heaps.vpu} MiB, vpp {heaps.vpp} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
