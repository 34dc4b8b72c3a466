"""After a reboot: did the staged layout take effect? Commit it, or mark it failed (and roll back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.config.provisioning import ProvisioningSettings
from provisioning import ion
from provisioning.apply import recover, rollback
from provisioning.state import ProvisionState, boot_id, now_iso

__all__ = ["VerifyResult", "verify_pending"]


@dataclass(frozen=True)
class VerifyResult:
    outcome: str  # "nothing-pending" | "not-rebooted" | "committed" | "failed" | "unknown"
    message: str
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "message": self.message, "exit_code": self.exit_code}


def verify_pending(settings: ProvisioningSettings) -> VerifyResult:
    state = ProvisionState(settings)
    recover(settings)
    pending = state.pending()
    if pending is None:
        return VerifyResult("nothing-pending", "no staged layout change", 0)
    if pending.boot_id and pending.boot_id == boot_id(settings):
        return VerifyResult("not-rebooted", f"{pending.layout} is staged; it takes effect after a reboot", 0)
    try:
        live = ion.read_layout(settings.sysroot)
    except ion.IonUnavailable as exc:
        return VerifyResult("unknown", f"cannot read the live heaps: {exc}", 2)
    if live == pending.layout:
        state.write("committed.json", {"layout": live.as_dict(), "model": pending.model, "time": now_iso()})
        if pending.model:
            state.write("profile.json", {"model": pending.model, "layout": live.as_dict(), "time": now_iso()})
        state.clear_pending()
        state.log("committed", layout=live.as_dict(), model=pending.model)
        return VerifyResult("committed", f"the box now runs {live}; change committed", 0)
    failure = {
        "expected": pending.layout.as_dict(),
        "live": live.as_dict(),
        "model": pending.model,
        "time": now_iso(),
    }
    state.write("failed.json", failure)
    state.log("verify-failed", **failure)
    message = f"the box runs {live}, not the staged {pending.layout}; the previous model profile is kept"
    if settings.auto_rollback:
        message += "; " + rollback(settings, reason="verify failed")
    else:
        state.clear_pending()
    return VerifyResult("failed", message, 1)
