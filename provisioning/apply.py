"""Stage a layout: memory_edit.sh -c, verify the new boot image, back up, install atomically, record.

Nothing at all is written when the live layout (or the change already staged) equals the plan, so a
fleet that re-runs ``apply`` never reboot-loops. The order of the writes is chosen so that a power cut
at any point leaves ``/boot`` with the old or the new image, never a half-written one:

1. ``memory_edit.sh -c`` in our work dir; verify the FIT (hashes, ION sizes) -- /boot untouched;
2. back up the current image (fsync'ed) into ``provision/backup/``;
3. record the intent (``pending.json``, phase ``installing``);
4. copy the image next to the target, fsync, rename over it, fsync the directory, sync;
5. phase ``staged``; mark ``/run/reboot-required``.
:func:`recover` finishes or forgets an interrupted step 3-5 by comparing checksums.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.atomic import sha256_file
from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import BootImageError, ProvisioningError
from provisioning import fit_image, ion, memory_edit
from provisioning.layout import MemoryLayout
from provisioning.plan import LayoutPlan
from provisioning.state import (
    PendingChange,
    ProvisionState,
    atomic_copy,
    boot_id,
    cleanup_temp_files,
    mark_reboot_required,
    now_iso,
)

__all__ = ["ApplyResult", "apply_plan", "boot_image_path", "reboot", "recover", "rollback"]

Fault = Callable[[str], None]
BOOT_IMAGES = ("/boot/emmcboot.itb", "/boot/boot.itb")


@dataclass(frozen=True)
class ApplyResult:
    action: str  # "unchanged" | "already-staged" | "staged" | "cancelled"
    layout: MemoryLayout
    messages: tuple[str, ...] = field(default_factory=tuple)
    pending: PendingChange | None = None

    @property
    def reboot_required(self) -> bool:
        return self.action in ("staged", "already-staged")

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "layout": self.layout.as_dict(),
            "messages": list(self.messages),
            "reboot_required": self.reboot_required,
            "pending": self.pending.to_json() if self.pending else None,
        }


def boot_image_path(settings: ProvisioningSettings) -> str:
    """The system path of the board's boot image (memory_edit.sh looks for the same two files)."""
    for system_path in BOOT_IMAGES:
        if settings.path(system_path).is_file():
            return system_path
    raise ProvisioningError(
        "no boot image: neither /boot/emmcboot.itb nor /boot/boot.itb exists",
        hint="this is not a Sophgo SoC box, or /boot is not mounted",
    )


def recover(settings: ProvisioningSettings) -> list[str]:
    """Finish or forget a change that a crash interrupted. Returns what it did."""
    state = ProvisionState(settings)
    done: list[str] = []
    for system_path in BOOT_IMAGES:
        target = settings.path(system_path)
        if target.parent.is_dir():
            done += [f"removed leftover {p.name}" for p in cleanup_temp_files(target.parent, target.name)]
    pending = state.pending()
    if pending is None or pending.phase != "installing":
        return done
    target = settings.path(pending.boot_image)
    current = sha256_file(target) if target.exists() else ""
    if current == pending.new_sha256:
        state.write_pending(_replace_phase(pending, "staged"))
        mark_reboot_required(settings)
        state.log("recovered", outcome="staged", layout=pending.layout.as_dict())
        done.append("an interrupted install had completed: the change is staged")
    elif current == pending.old_sha256:
        state.clear_pending()
        state.log("recovered", outcome="not-installed")
        done.append("an interrupted install never replaced the boot image: nothing is staged")
    else:
        atomic_copy(settings.path(pending.backup), target)
        state.clear_pending()
        state.log("recovered", outcome="restored-backup")
        done.append(
            f"the boot image matched neither side of an interrupted install: restored {pending.backup}"
        )
    return done


def _replace_phase(pending: PendingChange, phase: str) -> PendingChange:
    data = pending.to_json()
    data["phase"] = phase
    return PendingChange.from_json(data)


def apply_plan(
    settings: ProvisioningSettings,
    plan: LayoutPlan,
    *,
    dts_name: str | None,
    model: str | None = None,
    fault: Fault | None = None,
) -> ApplyResult:
    state = ProvisionState(settings)
    notes = recover(settings)
    pending = state.pending()
    if pending is not None and pending.layout == plan.layout:
        return ApplyResult(
            "already-staged", plan.layout, (*notes, f"{plan.layout} is already staged; reboot"), pending
        )
    if plan.layout == plan.current:
        if pending is not None:
            rollback(settings, reason="the plan equals the running layout")
            return ApplyResult(
                "cancelled",
                plan.layout,
                (*notes, "cancelled the staged change: the box already runs the plan"),
            )
        return ApplyResult(
            "unchanged", plan.layout, (*notes, f"the box already runs {plan.layout}; nothing written")
        )

    system_path = pending.boot_image if pending else boot_image_path(settings)
    target = settings.path(system_path)
    workdir = state.dir / "work"
    result = memory_edit.run_configure(settings, plan.layout, workdir)
    if settings.path(result.install_path) != target:
        raise BootImageError(f"memory_edit.sh wants to install {result.install_path}, expected {system_path}")
    if result.checked != plan.layout:
        raise BootImageError(f"memory_edit.sh checked {result.checked}, but the plan is {plan.layout}")
    fit_image.verify_boot_image(result.image, plan.layout, dts_name)
    new_sha = sha256_file(result.image)

    if pending is None:  # keep the image that booted; a re-plan on top of a staged change keeps its backup
        state.backup_dir.mkdir(parents=True, exist_ok=True)
        backup = state.backup_dir / f"{target.name}.{now_iso().replace(':', '')}"
        atomic_copy(target, backup)
        old_sha = sha256_file(target)
        if sha256_file(backup) != old_sha:
            raise ProvisioningError(f"the backup {backup} does not match {target}", hint="check the disk")
        backup_system = "/" + str(backup.relative_to(settings.sysroot))
        previous = plan.current
    else:
        backup_system, old_sha, previous = pending.backup, pending.old_sha256, pending.previous
    change = PendingChange(
        layout=plan.layout,
        previous=previous,
        boot_image=system_path,
        backup=backup_system,
        old_sha256=old_sha if pending is None else sha256_file(target),
        new_sha256=new_sha,
        model=model,
        boot_id=boot_id(settings),
        created=now_iso(),
        phase="installing",
    )
    state.write_pending(change)
    if fault:
        fault("intent-recorded")
    atomic_copy(result.image, target, fault=fault)
    if sha256_file(target) != new_sha:
        raise BootImageError(f"{target} does not read back as the verified image", hint="check the disk")
    change = _replace_phase(change, "staged")
    if pending is not None:  # the original backup stays the rollback target
        change = PendingChange.from_json({**change.to_json(), "old_sha256": pending.old_sha256})
    state.write_pending(change)
    mark_reboot_required(settings)
    state.log("staged", layout=plan.layout.as_dict(), previous=previous.as_dict(), model=model)
    return ApplyResult(
        "staged", plan.layout, (*notes, f"staged {plan.layout}; it takes effect after a reboot"), change
    )


def rollback(settings: ProvisioningSettings, *, reason: str = "requested") -> str:
    """Put the backed-up boot image back. With a pending change: its backup; else the newest backup."""
    state = ProvisionState(settings)
    recover(settings)
    pending = state.pending()
    if pending is not None:
        backup, target = settings.path(pending.backup), settings.path(pending.boot_image)
        rebooted = pending.boot_id != boot_id(settings)
    else:
        backups = sorted(state.backup_dir.glob("*.itb.*")) if state.backup_dir.is_dir() else []
        if not backups:
            raise ProvisioningError("nothing to roll back: no pending change and no backup")
        backup = backups[-1]
        target = settings.path(boot_image_path(settings))
        rebooted = True
    if not backup.is_file():
        raise ProvisioningError(f"the backup {backup} is missing", hint="restore the boot image by hand")
    fit_image.check_integrity(backup)
    atomic_copy(backup, target)
    state.clear_pending()
    if rebooted:
        mark_reboot_required(settings)
    state.log("rolled-back", backup=str(backup), reason=reason)
    return f"restored {backup.name} to {target}" + ("; reboot to use it" if rebooted else "")


def reboot(settings: ProvisioningSettings) -> None:
    try:
        subprocess.run(settings.reboot_command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ProvisioningError(f"reboot failed: {exc}", hint="reboot the box by hand") from None


def live_layout(settings: ProvisioningSettings) -> MemoryLayout:
    return ion.read_layout(settings.sysroot)
