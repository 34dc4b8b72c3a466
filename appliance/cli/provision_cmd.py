"""`llm-tpu provision`: check, plan and apply the TPU memory layout; status, rollback, verify, firstboot.

Exit codes of `check`: 0 the model fits and nothing is pending, 1 it does not fit or a change is
pending (reboot), 2 cannot tell (no model, no ION heaps) or an unsupported board (not a BM1684X).
`apply`, `rollback`, `verify`, `firstboot` and `status` take one lock (`<state dir>/lock`): a second run
waits for the first (up to --lock-timeout seconds), then says which process holds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ApplianceError, ProvisioningError, UnsupportedBoard
from provisioning import apply as apply_mod
from provisioning import firstboot
from provisioning.board import BoardState, read_board, unsupported_board
from provisioning.layout_spec import parse_layout_spec
from provisioning.lock import DEFAULT_LOCK_TIMEOUT_S, provision_lock
from provisioning.needs import ModelNeeds, needs_for_model, needs_from_figures
from provisioning.plan import LayoutPlan, fit_problems, model_capacity, plan_layout, plan_pinned
from provisioning.settings import load_settings
from provisioning.state import ProvisionState
from provisioning.verify import verify_pending

__all__ = ["register"]


def settings_from(args: argparse.Namespace) -> ProvisioningSettings:
    return load_settings(
        args.config,
        sysroot=args.sysroot,
        memory_edit=args.memory_edit,
        cpu_reserve_mib=args.cpu_reserve_mib,
        vpu_reserve_mib=args.vpu_reserve_mib,
        vpp_reserve_mib=args.vpp_reserve_mib,
        model=getattr(args, "model", None),
    )


def _needs(args: argparse.Namespace, settings: ProvisioningSettings) -> ModelNeeds | None:
    if getattr(args, "need_mib", None):
        return needs_from_figures(args.need_mib, args.largest_mib)
    return needs_for_model(settings.model, settings) if settings.model else None


def _emit(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print("\n".join(lines))


def _heap_table(state: BoardState, needs: ModelNeeds | None, settings: ProvisioningSettings) -> list[str]:
    lines = [f"{'heap':<5} {'size':>7} {'used':>7} {'free':>7} {'lgst free':>9} {'for model':>9}  (MiB)"]
    live = state.live
    cap = model_capacity(live, settings) if live else {}
    for name in ("npu", "vpu", "vpp"):
        h = state.heaps[name] if state.heaps else None
        largest = "?" if h is None or h.largest_free_mib is None else str(h.largest_free_mib)
        lines.append(
            f"{name:<5} {h.size_mib if h else '?':>7} {h.used_mib if h else '?':>7} {h.free_mib if h else '?':>7} "
            f"{largest:>9} {cap.get(name, '?'):>9}"
        )
    if needs:
        lines.append(
            f"need  {needs.total_mib:>7} MiB total (weights {needs.weight_bytes >> 20}, instructions "
            f"{needs.instruct_bytes >> 20}, runtime {needs.runtime_bytes >> 20}, io_alone {needs.io_alone_bytes >> 20}, "
            f"kv {needs.kv_app_bytes >> 20}, margin {needs.margin_bytes >> 20}); largest single {needs.largest_mib} MiB"
        )
        if note := needs.vendor_note():
            lines.append(f"note: {note}")
    return lines


def run_check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state = read_board(settings, with_memory_edit=False)
    pending = ProvisionState(settings).pending()
    problems: list[str] = []
    try:
        needs = _needs(args, settings)
    except ApplianceError as err:
        needs, problems = None, [err.message]
    data: dict[str, Any] = {**state.to_json(), "needs": needs.to_json() if needs else None}
    data["pending"] = pending.to_json() if pending else None
    lines = _heap_table(state, needs, settings) + [f"warning: {p}" for p in state.problems]
    if why := unsupported_board(settings):
        verdict, code, reason = "unsupported", 2, [why]
    elif state.live is None or state.heaps is None or needs is None:
        verdict, code = "unknown", 2
        reason = problems or list(state.problems) or ["no model given (--model, or provisioning.model)"]
    else:
        reason = fit_problems(state.live, needs, settings, state.cpu_mib)
        verdict, code = ("fits", 0) if not reason else ("does-not-fit", 1)
        busy = [h for h in state.heaps.values() if h.used_mib]
        if busy and not reason:
            lines.append("note: " + ", ".join(f"{h.name} has {h.used_mib} MiB in use" for h in busy))
    if pending is not None:
        reason = [*reason, f"a layout change ({pending.layout}) is staged: reboot, then `provision verify`"]
        code = max(code, 1) if code != 2 else 2
        verdict = "pending" if verdict == "fits" else verdict
    data.update(verdict=verdict, reasons=reason, exit_code=code)
    lines.append(f"verdict: {verdict}" + "".join(f"\n  - {r}" for r in reason))
    _emit(args, data, lines)
    return code


def _plan(args: argparse.Namespace, settings: ProvisioningSettings) -> tuple[BoardState, LayoutPlan]:
    if why := unsupported_board(settings):
        raise UnsupportedBoard(why)
    pinned, notes = parse_layout_spec(args.layout) if getattr(args, "layout", None) else (None, [])
    state = read_board(settings)
    needs = _needs(args, settings)
    if needs is None and pinned is None:
        raise ProvisioningError(
            "no model to plan for",
            hint="pass --model NAME (or --need-mib, or --layout), or set provisioning.model",
        )
    if state.board.limits is None or state.live is None:
        raise ProvisioningError(
            "cannot read the board's heap maxima: " + "; ".join(state.problems),
            hint="provision plan needs memory_edit.sh -p and the ION heaps (run as root on the box)",
        )
    if pinned is not None:
        plan = plan_pinned(
            pinned, state.board.limits, state.live, settings, state.cpu_mib, needs, tuple(notes)
        )
        return state, plan
    assert needs is not None
    return state, plan_layout(needs, state.board.limits, state.live, settings, state.cpu_mib)


def _plan_lines(plan: LayoutPlan) -> list[str]:
    lines = [f"plan: {plan.layout}" + ("" if plan.changed else " (unchanged)")]
    lines += [f"  - {r}" for r in plan.reasons] + [f"note: {n}" for n in plan.notes]
    return lines


def run_plan(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state, plan = _plan(args, settings)
    _emit(args, {"plan": plan.to_json(), "board": state.board.as_dict()}, _plan_lines(plan))
    return 0


def run_apply(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state, plan = _plan(args, settings)
    result = apply_mod.apply_plan(settings, plan, dts_name=state.board.dts_name, model=settings.model)
    _emit(
        args, {"plan": plan.to_json(), "apply": result.to_json()}, _plan_lines(plan) + list(result.messages)
    )
    if args.reboot and result.action == "staged":
        apply_mod.reboot(settings)
    return 0


def run_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    notes = apply_mod.recover(settings)
    st = ProvisionState(settings)
    board = read_board(settings, with_memory_edit=False)
    pending = st.pending()
    data = {
        **board.to_json(),
        "pending": pending.to_json() if pending else None,
        "committed": st.committed(),
        "failed": st.failed(),
        "profile": st.profile(),
        "reboot_required": settings.path("/run/reboot-required").exists(),
        "recovered": notes,
    }
    lines = [f"live layout: {board.live or 'unknown'}", f"board: {board.board.dts_name or 'unknown'}"]
    lines += [f"recovered: {n}" for n in notes]
    lines.append(
        f"pending: {pending.layout} (staged {pending.created}; reboot to apply)"
        if pending
        else "pending: none"
    )
    if c := st.committed():
        lines.append(f"committed: {c.get('layout')} at {c.get('time')}")
    if f := st.failed():
        lines.append(f"last failure: expected {f.get('expected')}, got {f.get('live')} at {f.get('time')}")
    _emit(args, data, lines)
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    message = apply_mod.rollback(settings_from(args))
    _emit(args, {"message": message}, [message])
    return 0


def run_verify(args: argparse.Namespace) -> int:
    result = verify_pending(settings_from(args))
    _emit(args, result.to_json(), [f"{result.outcome}: {result.message}"])
    return result.exit_code


def run_firstboot(args: argparse.Namespace) -> int:
    result = firstboot.run_firstboot(settings_from(args), force=args.force)
    _emit(args, result, [str(m) for m in result["messages"]])
    return int(result["exit_code"])


def _locked(name: str, func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``func`` holding the provisioning lock; an OSError (a full or read-only disk) is a clear error."""

    def run(args: argparse.Namespace) -> int:
        settings = settings_from(args)
        with provision_lock(
            settings,
            f"llm-tpu provision {name}",
            timeout_s=args.lock_timeout,
            on_wait=lambda message: print(message, file=sys.stderr, flush=True),
        ):
            try:
                return func(args)
            except OSError as exc:
                where = f" {exc.filename}" if exc.filename else ""
                raise ProvisioningError(
                    f"provision {name} failed writing{where}: {exc.strerror}",
                    hint="check that the disk is writable and has free space, then run it again",
                ) from None

    return run


def _common() -> argparse.ArgumentParser:
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument(
        "--config", type=Path, help="YAML file with a provisioning: section (default: the appliance config)"
    )
    c.add_argument("--sysroot", type=Path, help="root of all system paths (default /)")
    c.add_argument("--memory-edit", type=Path, help="memory_edit.sh or its directory")
    c.add_argument("--cpu-reserve-mib", type=int, help="CPU memory to keep free (default 4096)")
    c.add_argument("--vpu-reserve-mib", type=int, help="VPU heap kept for video (default 0)")
    c.add_argument("--vpp-reserve-mib", type=int, help="VPP heap kept for image processing (default 0)")
    c.add_argument(
        "--lock-timeout",
        type=float,
        default=DEFAULT_LOCK_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for another provisioning run to finish (default {DEFAULT_LOCK_TIMEOUT_S:g})",
    )
    c.add_argument("--json", action="store_true", help="machine-readable output")
    return c


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name, model directory or .bmodel (default: provisioning.model)")
    p.add_argument("--need-mib", type=int, help="plan for this TPU need instead of a model's")
    p.add_argument("--largest-mib", type=int, help="with --need-mib: the largest single allocation")


def _layout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--layout",
        metavar="SPEC",
        help="pin this layout instead of computing one: npu=N,vpu=N,vpp=N in MiB (7615, 7615M, 7.5G) or "
        "hex bytes (0x1dbf00000); checked against the maxima, the reserves and the model if given",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provision", help="TPU memory layout: check, plan, apply, verify", description=__doc__)
    psub = p.add_subparsers(dest="provision_command", metavar="ACTION")
    common = _common()
    specs = [
        ("check", run_check, "does the model fit the current layout? (exit 0 yes, 1 no/pending, 2 unknown)"),
        ("plan", run_plan, "compute a layout that fits the model within the board's maxima, and explain it"),
        (
            "apply",
            run_apply,
            "stage the planned layout in the boot image (writes nothing when already there)",
        ),
        ("status", run_status, "live layout, staged change, last commit or failure"),
        ("rollback", run_rollback, "restore the boot image saved before the last change"),
        ("verify", run_verify, "after a reboot: commit the staged change if the live heaps match it"),
        ("firstboot", run_firstboot, "apply the configured provisioning once, non-interactively"),
    ]
    for name, func, text in specs:
        sp = psub.add_parser(name, parents=[common], help=text, description=text)
        if name in ("check", "plan", "apply"):
            _model_args(sp)
        if name in ("plan", "apply"):
            _layout_arg(sp)
        if name == "apply":
            sp.add_argument("--reboot", action="store_true", help="reboot when a change was staged")
        if name == "firstboot":
            sp.add_argument("--force", action="store_true", help="run even if the first-boot stamp exists")
        locked = name in ("apply", "status", "rollback", "verify", "firstboot")
        sp.set_defaults(func=_locked(name, func) if locked else func)
    p.set_defaults(func=lambda args: p.print_help() or 2)
