#!/usr/bin/env python3
"""FAKE memory_edit.sh: a stand-in at the memory_edit.sh boundary, for tests only.

The real sophon-tools script edits a board's boot image and cannot run off a Sophgo box, so tests install
this file as ``memory_edit.sh`` in a kit directory. It follows sophgo-facts.md section 7 exactly:

* CLI: ``-p [dts]``, ``-c -npu N -vpu N -vpp N [dts]`` (all three decimal MiB or all three hex bytes; a
  size under 1 MiB deletes that heap), ``-d <itb>``, ``-e <itb>``, ``--clean``; anything else prints the
  usage after an ``Error:`` line and exits 255.
* It detects ``/boot/emmcboot.itb`` (BM1684/BM1684X) or ``/boot/boot.itb`` (BM1688, not modelled here:
  reported as an error), copies the image and ``/boot/multi.its`` into its own directory, unpacks the
  device trees with ``dumpimage``/``dtc``, and on ``-c`` edits the ION heaps under ``/reserved-memory``
  (``ion_{npu,vpu,vpp}_mem``, ``compatible = "<heap>-region"``, ``reg`` with 2 address + 2 size cells),
  rebuilds a REAL FIT image with ``mkimage``, leaves it in its own directory, writes
  ``/boot/<itb>.memeditBak`` and prints ``sudo cp <dir>/<itb> /boot/<itb> && sync``.
* Maxima as the vendor computes them: NPU = DDR1+2 - (armfw + arm + smmu reserved), VPU = DDR3 - 128 MiB
  firmware - 1 GiB kernel minimum, VPP = DDR4 (an SE7 16 GB gives 7615 / 2944 / 4096 MiB).
* Output lines ``Info: (max|now) <heap> size: 0x... [N MiB]``, ``Info: ddr12_size ...``, ``Info: ddr_size
  N MiB``, ``Info: use dts file <path>``, ``Info: check <heap> size: ...``, ``Info: check edit size ok``;
  errors start with ``Error:``. One ``log_<date>.log`` per run.

It runs with the box's python3 (3.8 on Ubuntu 20.04 boxes, 3.9 on Debian 11): nothing newer is used.

Test-only knobs (environment): ``FAKE_BOARD_SYSROOT`` roots every absolute path (``/boot``, ``/proc``,
``/sys``); ``FAKE_MEMORY_EDIT_SKEW=<heap>:<MiB>`` writes a wrong size for one heap into the image while
still printing the requested size and "check edit size ok" (a buggy tool our verification must catch);
``FAKE_MEMORY_EDIT_FAIL=1`` makes ``-c`` fail with an ``Error:`` line.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20
G4 = 1 << 32
HERE = Path(os.path.abspath(sys.argv[0])).parent
ROOT = Path(os.environ.get("FAKE_BOARD_SYSROOT", "/"))
LOG = HERE / f"log_{datetime.datetime.now():%Y_%m_%d_%H_%M_%S}.log"
DDR_INDEX = {"npu": 1, "vpu": 3, "vpp": 4}


def sys_path(p: str) -> Path:
    return ROOT / p.lstrip("/")


def out(line: str) -> None:
    print(line, flush=True)
    with open(LOG, "a") as fh:
        fh.write(line + "\n")


def fail(line: str) -> None:
    out(line)
    sys.exit(255)


def usage() -> None:
    print("Error: Invalid parameters. Please refer to the following example")
    print(f"{HERE}/memory_edit.sh -p [dts name] # for print infomation")
    print(f"{HERE}/memory_edit.sh -c -npu 0x80000000 -vpu 0x80000000 -vpp 0x80000000 [dts name] # Byte")
    print(f"{HERE}/memory_edit.sh -c -npu 2048 -vpu 2048 -vpp 2048 [dts name] # MiB")
    print(f"{HERE}/memory_edit.sh -d dtbfile # for de_emmcboot.itb")
    print(f"{HERE}/memory_edit.sh -e dtbfile # for en_emmcboot.itb")
    print(f"{HERE}/memory_edit.sh --clean # clean this dir")
    sys.exit(255)


def run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"Error: {' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def its_files() -> list[str]:
    text = (HERE / "multi.its").read_text()
    return re.findall(r'data = /incbin/\("\./([^"]+)"\)', text)


def unpack(itb: str) -> None:
    output = HERE / "output"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir()
    for index, name in enumerate(its_files()):
        run("dumpimage", "-T", "flat_dt", "-p", str(index), "-o", str(output / name), str(HERE / itb))
        if name.endswith(".dtb"):
            dts = run("dtc", "-q", "-I", "dtb", "-O", "dts", str(output / name))
            (output / name.replace(".dtb", ".dts")).write_text(dts)


def repack(itb: str) -> None:
    output = HERE / "output"
    for name in its_files():
        if name.endswith(".dtb") and (output / name.replace(".dtb", ".dts")).exists():
            run(
                "dtc",
                "-q",
                "-I",
                "dts",
                "-O",
                "dtb",
                "-o",
                str(output / name),
                str(output / name.replace(".dtb", ".dts")),
            )
    shutil.copy(HERE / "multi.its", output / "multi.its")
    run("mkimage", "-D", "-q -I dts -O dtb -p 500", "-f", "./multi.its", itb, cwd=output)


def cells(dtb: Path, node: str, prop: str) -> list[int] | None:
    proc = subprocess.run(["fdtget", "-t", "x", str(dtb), node, prop], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return [int(x, 16) for x in proc.stdout.split()]


def region_size(dtb: Path, node: str) -> int:
    reg = cells(dtb, f"/reserved-memory/{node}", "reg")
    return 0 if not reg else reg[2] * G4 + reg[3]


def main(argv: list[str]) -> None:
    LOG.write_text(datetime.datetime.now().ctime() + "\n")
    print("INFO: version: 2.12 (test stand-in)")
    hexa = r"^0x[0-9a-fA-F]+$"
    dec = r"^[0-9]+$"
    n = len(argv)
    if n in (1, 2) and argv[0] == "-p":
        mode = "print"
    elif n == 2 and argv[0] in ("-d", "-e"):
        (unpack if argv[0] == "-d" else repack)(argv[1])
        sys.exit(0)
    elif n == 1 and argv[0] == "--clean":
        for p in [HERE / "output", HERE / "multi.its", *HERE.glob("*.log"), *HERE.glob("*.itb")]:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        sys.exit(0)
    elif n in (7, 8) and argv[0] == "-c" and argv[1] == "-npu" and argv[3] == "-vpu" and argv[5] == "-vpp":
        values = [argv[2], argv[4], argv[6]]
        if all(re.match(hexa, v) for v in values):
            sizes = {"npu": int(values[0], 16), "vpu": int(values[1], 16), "vpp": int(values[2], 16)}
        elif all(re.match(dec, v) for v in values):
            sizes = {"npu": int(values[0]) * MIB, "vpu": int(values[1]) * MIB, "vpp": int(values[2]) * MIB}
        else:
            usage()
        mode = "config"
    else:
        usage()

    if sys_path("/boot/emmcboot.itb").exists():
        itb = "emmcboot.itb"
    elif sys_path("/boot/boot.itb").exists():
        fail("Error: bm1688 boot.itb is not modelled by this test stand-in")
    else:
        fail("Error: cannot find boot file")
    shutil.copy(sys_path(f"/boot/{itb}"), HERE / itb)
    shutil.copy(sys_path("/boot/multi.its"), HERE / "multi.its")
    if (mode == "print" and n == 2) or (mode == "config" and n == 8):
        dts_name = argv[-1]
    else:
        dts_name = sys_path("/proc/device-tree/info/file-name").read_bytes().decode().strip("\x00\n")
    if not dts_name:
        fail("Error: cannot find used dts file on bm1684")
    unpack(itb)
    dts_name = dts_name[: -len(".dtb")] if dts_name.endswith(".dtb") else dts_name
    if not dts_name.endswith(".dts"):
        dts_name += ".dts"
    dts = HERE / "output" / dts_name
    dtb = dts.with_suffix(".dtb")
    out(f"Info: use dts file {dts}")
    if not dts.exists():
        fail(f"Error: cannot find {dts}")
    out("Info: =======================================================================")
    out("Info: get ddr information ...")
    mem = cells(dtb, "/memory", "reg") or []
    if len(mem) != 12:
        fail("Error: cannot support ddr info")
    ddr12, ddr3, ddr4 = (mem[i] * G4 + mem[i + 1] for i in (2, 6, 10))
    for name, size in (("ddr12_size", ddr12), ("ddr3_size", ddr3), ("ddr4_size", ddr4)):
        out(f"Info: {name} {size} Byte [{size // MIB} MiB]")
    out(f"Info: ddr_size {(ddr12 + ddr3 + ddr4) // MIB} MiB")
    npu_add = sum(region_size(dtb, n) for n in ("armfw_mem", "arm_mem", "smmu_mem"))
    vpu_add = 0x8000000 + (1 << 30)
    maxima = {"npu": ddr12 - npu_add, "vpu": ddr3 - vpu_add, "vpp": ddr4}
    out("Info: =======================================================================")
    out("Info: get max memory size ...")
    for heap in ("npu", "vpu", "vpp"):
        out(f"Info: max {heap} size: {maxima[heap]:#x} [{maxima[heap] // MIB} MiB]")
    if mode == "print":
        out("Info: =======================================================================")
        out("Info: get now memory size ...")
        for heap in ("npu", "vpu", "vpp"):
            total = sys_path(f"/sys/kernel/debug/ion/bm_{heap}_heap_dump/total_mem")
            size = int(total.read_text().strip(), 0) if total.exists() else 0
            out(f"Info: now {heap} size: {size:#x} [{size // MIB} MiB]")
        sys.exit(0)

    if os.environ.get("FAKE_MEMORY_EDIT_FAIL"):
        fail("Error: en_emmcfile")
    ddr_size = {1: ddr12, 3: ddr3, 4: ddr4}
    if sizes["npu"] + npu_add > ddr12:
        fail(f"Error: npu size {sizes['npu']:#x} error")
    if sizes["vpu"] > MIB and sizes["vpu"] + vpu_add > ddr3:
        fail(f"Error: vpu size {sizes['vpu']:#x} error")
    if sizes["vpp"] > ddr4:
        fail(f"Error: vpp size {sizes['vpp']:#x} error")
    written = dict(sizes)
    if skew := os.environ.get("FAKE_MEMORY_EDIT_SKEW"):
        heap, delta = skew.split(":")
        written[heap] += int(delta) * MIB
    out("Info: =======================================================================")
    out("Info: output configuration results ...")
    for heap in ("npu", "vpu", "vpp"):
        node = f"/reserved-memory/ion_{heap}_mem"
        if written[heap] < MIB:
            subprocess.run(["fdtput", "-r", str(dtb), node], capture_output=True)
            continue
        start = npu_add if heap == "npu" else ddr_size[DDR_INDEX[heap]] - written[heap]
        reg = [DDR_INDEX[heap] + start // G4, start % G4, written[heap] // G4, written[heap] % G4]
        subprocess.run(["fdtput", "-c", str(dtb), node], capture_output=True)
        run("fdtput", "-t", "s", str(dtb), node, "compatible", f"{heap}-region")
        run("fdtput", "-t", "x", str(dtb), node, "reg", *(f"{c:#x}" for c in reg))
        out(
            f"Info: ion {heap} mem area(ddr{DDR_INDEX[heap]}): {sizes[heap]:#x} [{sizes[heap] // MIB} MiB] {start:#x} -> {start + written[heap] - 1:#x}"
        )
    dts.write_text(run("dtc", "-q", "-I", "dtb", "-O", "dts", str(dtb)))
    out("Info: =======================================================================")
    out("Info: start check memory size ...")
    for heap in ("npu", "vpu", "vpp"):
        # The real tool re-reads its edited dts here; the skew knob models a tool that gets this wrong.
        out(f"Info: check {heap} size: {sizes[heap]:#x} [{sizes[heap] // MIB} MiB]")
    out("Info: check edit size ok")
    repack(itb)
    out(f"Info: en_emmcfile ok\nsudo cp {HERE}/{itb} /boot/{itb} && sync")
    shutil.copy(HERE / "output" / itb, HERE / itb)
    shutil.copy(sys_path(f"/boot/{itb}"), sys_path(f"/boot/{itb}.memeditBak"))


if __name__ == "__main__":
    main(sys.argv[1:])
