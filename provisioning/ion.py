"""Read the ION heaps from debugfs: ``/sys/kernel/debug/ion/bm_{npu,vpu,vpp}_heap_dump/``.

``total_mem`` holds the heap size in bytes (decimal, or hex with 0x: memory_edit.sh reads it with shell
arithmetic, which takes both). ``summary`` has a line like
``[0] npu heap size:4141875200 bytes, used:0 bytes        usage rate:0%, memory usage peak 0 bytes``.
A heap without a dump directory does not exist (memory_edit.sh reports it as 0).
"""

from __future__ import annotations

import re
from pathlib import Path

from provisioning.layout import HEAPS, HeapInfo, MemoryLayout, bytes_to_mib

__all__ = ["ION_DIR", "IonUnavailable", "read_heaps", "read_layout"]

ION_DIR = "/sys/kernel/debug/ion"
_SUMMARY = re.compile(
    r"heap size:\s*(?P<size>\d+)\s*bytes,\s*used:\s*(?P<used>\d+)\s*bytes"
    r"(?:.*?peak\s+(?P<peak>\d+)\s*bytes)?"
)


class IonUnavailable(Exception):
    """debugfs ION files are absent or unreadable (not root, no debugfs, not a Sophgo SoC)."""


def _int(text: str) -> int:
    text = text.strip().strip("\x00")
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _heap(ion_dir: Path, name: str) -> HeapInfo | None:
    dump = ion_dir / f"bm_{name}_heap_dump"
    if not dump.is_dir():
        return None
    size = used = peak = 0
    try:
        size = _int((dump / "total_mem").read_text())
    except FileNotFoundError:
        size = -1
    except (OSError, ValueError) as exc:
        raise IonUnavailable(f"{dump / 'total_mem'}: {exc}") from None
    try:
        match = _SUMMARY.search((dump / "summary").read_text())
    except FileNotFoundError:
        match = None
    except OSError as exc:
        raise IonUnavailable(f"{dump / 'summary'}: {exc}") from None
    if match:
        used = int(match["used"])
        peak = int(match["peak"] or 0)
        if size < 0:
            size = int(match["size"])
    if size < 0:
        raise IonUnavailable(f"{dump} has neither total_mem nor a readable summary")
    # An idle heap is one free block; once used, the summary cannot tell fragmentation apart.
    return HeapInfo(
        name=name,
        size_mib=bytes_to_mib(size),
        largest_free_mib=bytes_to_mib(size) if used == 0 else None,
        used_mib=-(-used // (1 << 20)),  # round used up: free space is never overstated
        peak_mib=-(-peak // (1 << 20)),
    )


def read_heaps(sysroot: Path) -> dict[str, HeapInfo]:
    """All three heaps; a missing heap is reported with size 0. Raises IonUnavailable."""
    ion_dir = sysroot / ION_DIR.lstrip("/")
    if not ion_dir.is_dir():
        raise IonUnavailable(f"{ion_dir} does not exist (debugfs not mounted, not root, or not a Sophgo SoC)")
    heaps = {name: _heap(ion_dir, name) for name in HEAPS}
    if all(h is None for h in heaps.values()):
        raise IonUnavailable(f"{ion_dir} has no bm_*_heap_dump directories")
    return {name: h if h is not None else HeapInfo(name=name, size_mib=0) for name, h in heaps.items()}


def read_layout(sysroot: Path) -> MemoryLayout:
    heaps = read_heaps(sysroot)
    return MemoryLayout(npu=heaps["npu"].size_mib, vpu=heaps["vpu"].size_mib, vpp=heaps["vpp"].size_mib)
