"""Everything we know about the board: identity, heap maxima, live heaps, CPU memory."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ApplianceError
from provisioning import ion, memory_edit
from provisioning.layout import BoardInfo, HeapInfo, MemoryLayout
from provisioning.plan import cpu_memory_mib

__all__ = ["BoardState", "dts_name", "read_board", "tpu_status"]


def dts_name(settings: ProvisioningSettings) -> str | None:
    """The device tree the box booted (``/proc/device-tree/info/file-name``), or the configured one."""
    if settings.dts_name:
        return settings.dts_name
    try:
        return (
            settings.path("/proc/device-tree/info/file-name").read_bytes().decode().strip("\x00\n ") or None
        )
    except OSError:
        return None


@dataclass(frozen=True)
class BoardState:
    board: BoardInfo
    heaps: dict[str, HeapInfo] | None
    cpu_mib: int | None
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def live(self) -> MemoryLayout | None:
        if self.heaps is not None:
            return MemoryLayout(**{h: self.heaps[h].size_mib for h in ("npu", "vpu", "vpp")})
        return self.board.current

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.board.as_dict(),
            "heaps": {k: v.as_dict() for k, v in self.heaps.items()} if self.heaps else None,
            "live": self.live.as_dict() if self.live else None,
            "cpu_mib": self.cpu_mib,
            "problems": list(self.problems),
        }


def read_board(settings: ProvisioningSettings, *, with_memory_edit: bool = True) -> BoardState:
    """Read ION debugfs and (optionally) ``memory_edit.sh -p``; collect what failed instead of raising."""
    problems: list[str] = []
    heaps = None
    try:
        heaps = ion.read_heaps(settings.sysroot)
    except ion.IonUnavailable as exc:
        problems.append(f"ION heaps: {exc}")
    report = None
    if with_memory_edit:
        try:
            report = memory_edit.run_print(settings)
        except ApplianceError as err:
            problems.append(f"memory_edit.sh -p: {err.message}")
    name = dts_name(settings) or (report.dts_name if report else None)
    board = BoardInfo(
        dts_name=name,
        chip="bm1684x" if name and "bm1684x" in name else None,
        boot_image=next(
            (p for p in ("/boot/emmcboot.itb", "/boot/boot.itb") if settings.path(p).is_file()), None
        ),
        ddr_mib=dict(report.ddr_mib) if report else {},
        limits=report.limits if report else None,
        current=report.current if report else None,
    )
    live = MemoryLayout(**{h: heaps[h].size_mib for h in ("npu", "vpu", "vpp")}) if heaps else board.current
    if heaps and report and report.current != live:
        problems.append(f"memory_edit.sh reports {report.current} but ION debugfs has {live}; using ION")
    cpu = cpu_memory_mib(settings, live, board.ddr_total_mib) if live else None
    return BoardState(board=board, heaps=heaps, cpu_mib=cpu, problems=tuple(problems))


def tpu_status(sysroot: Path = Path("/")) -> dict[str, Any]:
    """TPU device nodes and ION heap use, where this process can see them (root on the box): the probe
    `llm-tpu serve` hands the service for /api/status."""
    devices = sorted(str(p) for p in (sysroot / "dev").glob("bm-sophon*"))
    out: dict[str, Any] = {"devices": devices, "ctl": os.path.exists(sysroot / "dev" / "bmdev-ctl")}
    try:
        out["heaps"] = {name: dataclasses.asdict(h) for name, h in ion.read_heaps(sysroot).items()}
    except (ion.IonUnavailable, OSError) as exc:
        out["heaps_unavailable"] = str(exc)
    return out
