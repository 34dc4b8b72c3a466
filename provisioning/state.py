"""Provisioning records under ``/var/lib/llm-tpu/provision/`` and the reboot-required marker.

``pending.json``   a staged change (phase ``installing`` while the image is being written, then ``staged``)
``committed.json`` the last layout verified after a reboot, and the model it was made for
``profile.json``   the model profile the service should use (only a verified change updates it)
``failed.json``    the last change that did not take effect
``history.jsonl``  one line per event
``backup/``        boot images as they were before each change
All JSON is written atomically (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.atomic import fsync_dir, write_json_atomic
from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ProvisioningError
from provisioning.layout import MemoryLayout

__all__ = [
    "PendingChange",
    "ProvisionState",
    "atomic_copy",
    "boot_id",
    "cleanup_temp_files",
    "clear_reboot_required",
    "fsync_dir",
    "mark_reboot_required",
    "now_iso",
    "write_json_atomic",
]

REBOOT_REQUIRED = "/run/reboot-required"
PACKAGE = "llm-tpu-appliance"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_copy(src: Path, dest: Path, *, fault: Any = None) -> None:
    """Copy ``src`` over ``dest`` so that ``dest`` is at every instant either the old or the new file:
    temp file in the same directory, fsync, rename, fsync of the directory, sync."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.llm-tpu-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if fault:
            fault("temp-written")
        os.replace(tmp, dest)
    except Exception:
        # Only ordinary errors clean up: a power cut (tests raise a BaseException) leaves the temp file
        # behind, and cleanup_temp_files() removes it on the next run.
        Path(tmp).unlink(missing_ok=True)
        raise
    if fault:
        fault("renamed")
    fsync_dir(dest.parent)
    os.sync()


def cleanup_temp_files(directory: Path, name: str) -> list[Path]:
    removed = []
    for leftover in directory.glob(f".{name}.llm-tpu-*"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def boot_id(settings: ProvisioningSettings) -> str:
    try:
        return settings.path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def mark_reboot_required(settings: ProvisioningSettings) -> None:
    """The Debian convention: ``/run/reboot-required`` plus our package name in ``.pkgs``."""
    marker = settings.path(REBOOT_REQUIRED)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("*** System restart required ***\n")
    pkgs = marker.with_name(marker.name + ".pkgs")
    names = pkgs.read_text().split() if pkgs.exists() else []
    if PACKAGE not in names:
        with open(pkgs, "a") as fh:
            fh.write(PACKAGE + "\n")


def clear_reboot_required(settings: ProvisioningSettings) -> None:
    """Withdraw our reboot request; the marker stays while another package still asks for a reboot."""
    marker = settings.path(REBOOT_REQUIRED)
    pkgs = marker.with_name(marker.name + ".pkgs")
    names = pkgs.read_text().split() if pkgs.exists() else []
    if PACKAGE not in names:
        return  # not our request
    others = [n for n in names if n != PACKAGE]
    if others:
        pkgs.write_text("".join(n + "\n" for n in others))
        return
    pkgs.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class PendingChange:
    layout: MemoryLayout
    previous: MemoryLayout
    boot_image: str  # system path, e.g. /boot/emmcboot.itb
    backup: str  # system path of the backup image
    old_sha256: str
    new_sha256: str
    model: str | None
    boot_id: str
    created: str
    phase: str = "staged"  # "installing" | "staged"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layout"] = self.layout.as_dict()
        data["previous"] = self.previous.as_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingChange:
        fields = dict(data)
        fields["layout"] = MemoryLayout.from_dict(data["layout"])
        fields["previous"] = MemoryLayout.from_dict(data["previous"])
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


class ProvisionState:
    def __init__(self, settings: ProvisioningSettings) -> None:
        self.settings = settings
        self.dir = settings.state_dir

    @property
    def backup_dir(self) -> Path:
        return self.dir / "backup"

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ProvisioningError(
                f"{path} cannot be read: {exc}", hint=f"inspect or remove {path}, then run the command again"
            ) from None
        return data if isinstance(data, dict) else None

    def pending(self) -> PendingChange | None:
        data = self._read("pending.json")
        if data is None:
            return None
        try:
            return PendingChange.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisioningError(f"{self.dir / 'pending.json'} is malformed: {exc}") from None

    def write_pending(self, change: PendingChange) -> None:
        write_json_atomic(self.dir / "pending.json", change.to_json())

    def clear_pending(self) -> None:
        (self.dir / "pending.json").unlink(missing_ok=True)
        fsync_dir(self.dir)

    def committed(self) -> dict[str, Any] | None:
        return self._read("committed.json")

    def failed(self) -> dict[str, Any] | None:
        return self._read("failed.json")

    def profile(self) -> dict[str, Any] | None:
        return self._read("profile.json")

    def write(self, name: str, data: dict[str, Any]) -> None:
        write_json_atomic(self.dir / name, data)

    def history(self) -> list[dict[str, Any]]:
        path = self.dir / "history.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log(self, event: str, **data: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "history.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": now_iso(), "event": event, **data}, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
