"""First boot: pull the configured models and stage the configured layout, once, without questions.

Guarded by a stamp (``/var/lib/llm-tpu/provision/firstboot.done``) so it runs once; a failure leaves no
stamp, so the next boot tries again. The reboot happens only when ``firstboot_reboot`` is set.
"""

from __future__ import annotations

from typing import Any

from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ApplianceError
from provisioning import apply as apply_mod
from provisioning.board import read_board
from provisioning.needs import needs_for_model
from provisioning.plan import plan_layout
from provisioning.pull import pull
from provisioning.state import ProvisionState, now_iso, write_json_atomic

__all__ = ["run_firstboot"]


def run_firstboot(settings: ProvisioningSettings, *, force: bool = False) -> dict[str, Any]:
    stamp = settings.state_dir / "firstboot.done"
    if stamp.exists() and not force:
        return {"exit_code": 0, "messages": [f"first boot already done ({stamp})"], "action": "skipped"}
    messages: list[str] = []
    state = ProvisionState(settings)
    try:
        for ref in settings.firstboot_models:
            messages.append(f"installed {pull(ref, progress=False).name}")
        action = "no-model"
        if settings.model:
            board = read_board(settings)
            if board.board.limits is None or board.live is None:
                raise ApplianceError("cannot read the board: " + "; ".join(board.problems))
            plan = plan_layout(
                needs_for_model(settings.model, settings),
                board.board.limits,
                board.live,
                settings,
                board.cpu_mib,
            )
            result = apply_mod.apply_plan(settings, plan, dts_name=board.board.dts_name, model=settings.model)
            action = result.action
            messages += list(result.messages)
    except ApplianceError as err:
        state.log("firstboot-failed", error=err.message)
        return {
            "exit_code": err.exit_code or 1,
            "messages": [*messages, f"error: {err.message}"],
            "action": "failed",
        }
    write_json_atomic(stamp, {"time": now_iso(), "action": action})
    state.log("firstboot", action=action)
    if action == "staged" and settings.firstboot_reboot:
        apply_mod.reboot(settings)
    return {"exit_code": 0, "messages": messages or ["nothing configured"], "action": action}
