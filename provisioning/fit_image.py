"""Check a FIT boot image (``emmcboot.itb``/``boot.itb``) before it goes anywhere near ``/boot``.

A FIT image is itself a flattened device tree holding the kernel, the ramdisk and one dtb per board.
We use the Debian tools (``dumpimage`` from u-boot-tools, ``dtc``/``fdtget`` from device-tree-compiler):
the image must parse as a whole, every embedded image must match its recorded hash (what U-Boot checks
at boot), and the dtb the box boots must carry ION heaps of exactly the planned sizes under
``/reserved-memory`` (nodes with ``compatible = "<npu|vpu|vpp>-region"``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import BootImageError, ProvisioningError
from provisioning.layout import HEAPS, MemoryLayout, bytes_to_mib

__all__ = ["FitImage", "boot_image_layout", "check_integrity", "list_images", "verify_boot_image"]

_IMAGE = re.compile(r"^\s*Image (\d+) \((.+)\)\s*$")
_FIELD = re.compile(r"^\s*([A-Za-z ]+):\s*(.*)$")


@dataclass(frozen=True)
class FitImage:
    index: int
    name: str
    type: str
    description: str = ""
    hash_algo: str | None = None
    hash_value: str | None = None

    @property
    def is_dtb(self) -> bool:
        return self.type == "Flat Device Tree"


def _tool(*cmd: str) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        package = "u-boot-tools" if cmd[0] in ("dumpimage", "mkimage") else "device-tree-compiler"
        raise ProvisioningError(f"{cmd[0]} is not installed", hint=f"apt-get install {package}")
    proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        raise BootImageError(
            f"{' '.join(cmd[:2])}... failed on a boot image: {(proc.stderr or proc.stdout).strip()[:300]}",
            hint="the image is damaged; nothing was installed",
        )
    return proc.stdout


def list_images(itb: Path) -> list[FitImage]:
    # dumpimage -l prints garbage and exits 0 for a truncated file, so parse the FIT with dtc first.
    _tool("dtc", "-q", "-I", "dtb", "-O", "dts", "-o", "/dev/null", str(itb))
    images: list[FitImage] = []
    current: dict[str, str] = {}

    def flush() -> None:
        if current:
            images.append(
                FitImage(
                    index=int(current["index"]),
                    name=current["name"],
                    type=current.get("Type", ""),
                    description=current.get("Description", ""),
                    hash_algo=current.get("Hash algo"),
                    hash_value=current.get("Hash value"),
                )
            )

    for line in _tool("dumpimage", "-l", str(itb)).splitlines():
        if m := _IMAGE.match(line):
            flush()
            current = {"index": m[1], "name": m[2]}
        elif line.startswith((" Default Configuration", " Configuration")):
            flush()
            current = {}
        elif current and (m := _FIELD.match(line)):
            current.setdefault(m[1].strip(), m[2].strip())
    flush()
    if not images:
        raise BootImageError(f"{itb} is not a FIT image (no images inside)")
    return images


def _extract(itb: Path, index: int, out: Path) -> bytes:
    _tool("dumpimage", "-T", "flat_dt", "-p", str(index), "-o", str(out), str(itb))
    return out.read_bytes()


def _digest(algo: str, data: bytes) -> str | None:
    if algo == "crc32":
        return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    if algo in ("sha1", "sha256", "md5"):
        return hashlib.new(algo, data).hexdigest()
    return None


def check_integrity(itb: Path) -> list[FitImage]:
    """Every embedded image matches its recorded hash. Returns the image list."""
    images = list_images(itb)
    with tempfile.TemporaryDirectory(prefix="llm-tpu-fit-") as tmp:
        for image in images:
            data = _extract(itb, image.index, Path(tmp) / f"{image.index}.bin")
            if image.hash_algo and image.hash_value:
                got = _digest(image.hash_algo, data)
                if got is not None and got != image.hash_value.lower():
                    raise BootImageError(
                        f"{itb}: image {image.name} has {image.hash_algo} {got}, the FIT records {image.hash_value}",
                        hint="the boot image is corrupt; nothing was installed",
                    )
    return images


def _cells(dtb: Path, node: str, prop: str) -> list[int] | None:
    exe = shutil.which("fdtget") or "fdtget"
    proc = subprocess.run([exe, "-t", "x", str(dtb), node, prop], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return [int(x, 16) for x in proc.stdout.split()]


def _dtb_layout(dtb: Path) -> MemoryLayout:
    size_cells = (_cells(dtb, "/reserved-memory", "#size-cells") or [2])[0]
    address_cells = (_cells(dtb, "/reserved-memory", "#address-cells") or [2])[0]
    sizes = dict.fromkeys(HEAPS, 0)
    for node in _tool("fdtget", "-l", str(dtb), "/reserved-memory").split():
        path = f"/reserved-memory/{node}"
        proc = subprocess.run(
            ["fdtget", str(dtb), path, "compatible"], capture_output=True, text=True, check=False
        )
        heap = proc.stdout.strip().removesuffix("-region")
        if proc.returncode != 0 or heap not in sizes or not proc.stdout.strip().endswith("-region"):
            continue
        reg = _cells(dtb, path, "reg") or []
        if len(reg) != address_cells + size_cells:
            raise BootImageError(f"{path} in the boot image has a malformed reg ({len(reg)} cells)")
        size = 0
        for cell in reg[address_cells:]:
            size = (size << 32) | cell
        sizes[heap] += size
    return MemoryLayout(**{h: bytes_to_mib(v) for h, v in sizes.items()})


def _stem(name: str) -> str:
    name = Path(name.strip().strip("\x00")).name
    for suffix in (".dtb", ".dts"):
        name = name.removesuffix(suffix)
    return name


def boot_image_layout(itb: Path, dts_name: str | None, images: list[FitImage] | None = None) -> MemoryLayout:
    """The ION heap sizes in the dtb named ``dts_name`` (``/info/file-name``, else the image's name)."""
    images = images if images is not None else list_images(itb)
    dtbs = [i for i in images if i.is_dtb]
    if not dtbs:
        raise BootImageError(f"{itb} holds no device tree")
    with tempfile.TemporaryDirectory(prefix="llm-tpu-fit-") as tmp:
        candidates: list[tuple[FitImage, Path, str]] = []
        for image in dtbs:
            out = Path(tmp) / f"{image.index}.dtb"
            _extract(itb, image.index, out)
            proc = subprocess.run(
                ["fdtget", str(out), "/info", "file-name"], capture_output=True, text=True, check=False
            )
            candidates.append((image, out, proc.stdout if proc.returncode == 0 else image.description))
        if dts_name is None:
            if len(candidates) != 1:
                raise BootImageError(
                    f"{itb} holds {len(candidates)} device trees and the board's dts name is unknown",
                    hint="set provisioning.dts_name (see /proc/device-tree/info/file-name)",
                )
            return _dtb_layout(candidates[0][1])
        for _image, path, name in candidates:
            if _stem(name) == _stem(dts_name):
                return _dtb_layout(path)
    names = ", ".join(_stem(n) for _i, _p, n in candidates)
    raise BootImageError(f"{itb} has no device tree for {dts_name} (it has: {names})")


def verify_boot_image(itb: Path, expected: MemoryLayout, dts_name: str | None) -> MemoryLayout:
    """Raise BootImageError unless ``itb`` is intact and its booted dtb has exactly ``expected``."""
    images = check_integrity(itb)
    found = boot_image_layout(itb, dts_name, images)
    if found != expected:
        raise BootImageError(
            f"the new boot image's device tree has {found}, but the plan is {expected}",
            hint="memory_edit.sh produced a wrong image; nothing was installed",
        )
    return found
