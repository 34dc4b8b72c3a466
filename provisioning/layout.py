"""TPU memory layouts as frozen values, normalized to whole MiB.

A box's TPU memory is three ION heaps (NPU, VPU, VPP, sophgo-facts.md section 7). Every source that
reports them (ION debugfs, ``memory_edit.sh -p``, a plan, a device tree in a boot image) is turned into
a :class:`MemoryLayout` so that they compare with ``==``: a fleet must never reboot-loop because one
source said 7615 MiB and another 0x1dbf00000 bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "HEAPS",
    "MIB",
    "BoardInfo",
    "HeapInfo",
    "HeapLimits",
    "MemoryLayout",
    "bytes_to_mib",
]

MIB = 1 << 20
HEAPS: tuple[str, ...] = ("npu", "vpu", "vpp")


def bytes_to_mib(value: int) -> int:
    """Floor to whole MiB, as memory_edit.sh prints them (``size / 1 MiB`` in shell arithmetic)."""
    return max(0, int(value)) // MIB


@dataclass(frozen=True)
class MemoryLayout:
    """Sizes of the three ION heaps in MiB. A size of 0 means the heap does not exist."""

    npu: int
    vpu: int
    vpp: int

    def __post_init__(self) -> None:
        for name in HEAPS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} heap size must be a whole number of MiB >= 0, got {value!r}")

    @property
    def total(self) -> int:
        return self.npu + self.vpu + self.vpp

    def size(self, heap: str) -> int:
        return int(getattr(self, heap))

    def as_dict(self) -> dict[str, int]:
        return {"npu": self.npu, "vpu": self.vpu, "vpp": self.vpp}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryLayout:
        return cls(npu=int(data["npu"]), vpu=int(data["vpu"]), vpp=int(data["vpp"]))

    @classmethod
    def from_bytes(cls, npu: int, vpu: int, vpp: int) -> MemoryLayout:
        return cls(npu=bytes_to_mib(npu), vpu=bytes_to_mib(vpu), vpp=bytes_to_mib(vpp))

    def memory_edit_args(self) -> list[str]:
        """``-npu N -vpu N -vpp N`` in decimal MiB (memory_edit.sh takes all decimal or all hex)."""
        return ["-npu", str(self.npu), "-vpu", str(self.vpu), "-vpp", str(self.vpp)]

    def __str__(self) -> str:
        return f"npu {self.npu} MiB, vpu {self.vpu} MiB, vpp {self.vpp} MiB"


@dataclass(frozen=True)
class HeapLimits:
    """The largest size each heap may have on this board, as ``memory_edit.sh -p`` prints them."""

    npu: int
    vpu: int
    vpp: int

    def size(self, heap: str) -> int:
        return int(getattr(self, heap))

    def as_dict(self) -> dict[str, int]:
        return {"npu": self.npu, "vpu": self.vpu, "vpp": self.vpp}

    def violations(self, layout: MemoryLayout) -> list[str]:
        return [
            f"{h} {layout.size(h)} MiB exceeds the board maximum {self.size(h)} MiB"
            for h in HEAPS
            if layout.size(h) > self.size(h)
        ]


@dataclass(frozen=True)
class HeapInfo:
    """One heap as the running kernel reports it. ``largest_free_mib`` is None when the source cannot
    tell fragmentation apart from free space (the ION summary only has size and used)."""

    name: str
    size_mib: int
    used_mib: int = 0
    peak_mib: int = 0
    largest_free_mib: int | None = None

    @property
    def free_mib(self) -> int:
        return max(0, self.size_mib - self.used_mib)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["free_mib"] = self.free_mib
        return out


@dataclass(frozen=True)
class BoardInfo:
    """What the board is: the device tree it booted, its DDR banks, its heap maxima and the boot image."""

    dts_name: str | None = None
    chip: str | None = None
    boot_image: str | None = None
    ddr_mib: dict[str, int] = field(default_factory=dict)
    limits: HeapLimits | None = None
    current: MemoryLayout | None = None

    @property
    def ddr_total_mib(self) -> int | None:
        if "ddr_size" in self.ddr_mib:
            return self.ddr_mib["ddr_size"]
        banks = [v for k, v in self.ddr_mib.items() if k != "ddr_size"]
        return sum(banks) if banks else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dts_name": self.dts_name,
            "chip": self.chip,
            "boot_image": self.boot_image,
            "ddr_mib": dict(self.ddr_mib),
            "ddr_total_mib": self.ddr_total_mib,
            "limits": self.limits.as_dict() if self.limits else None,
            "current": self.current.as_dict() if self.current else None,
        }
