"""Choose an ION layout that holds a model: within the board's maxima, keeping CPU memory and the
video reservations, changing as little as possible (an already fitting layout is kept as it is).

The runtime tries the NPU heap first, then VPP, then VPU, and one allocation must fit inside one heap
(sophgo-facts.md section 7). So the model goes into the NPU heap; only what the NPU maximum cannot hold
spills into VPP and then VPU, above their reservations. Existing video heaps are kept unless the CPU
reserve needs their memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import LayoutDoesNotFit
from provisioning.layout import HeapLimits, MemoryLayout
from provisioning.needs import ModelNeeds

__all__ = ["LayoutPlan", "cpu_memory_mib", "fit_problems", "model_capacity", "plan_layout", "plan_pinned"]

# With no /proc/meminfo we assume the kernel keeps this much of the DDR outside the heaps (the vendor
# script's own "kernel minimal" constant).
KERNEL_OVERHEAD_MIB = 1024


@dataclass(frozen=True)
class LayoutPlan:
    layout: MemoryLayout
    current: MemoryLayout
    limits: HeapLimits
    changed: bool
    reasons: tuple[str, ...]
    cpu_after_mib: int | None
    need_mib: int
    largest_mib: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout.as_dict(),
            "current": self.current.as_dict(),
            "limits": self.limits.as_dict(),
            "changed": self.changed,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "cpu_after_mib": self.cpu_after_mib,
            "need_mib": self.need_mib,
            "largest_mib": self.largest_mib,
        }


def cpu_memory_mib(
    settings: ProvisioningSettings, current: MemoryLayout, ddr_total_mib: int | None
) -> int | None:
    """CPU memory the kernel has now (MemTotal), or an estimate from the DDR size."""
    try:
        text = settings.path("/proc/meminfo").read_text()
    except OSError:
        text = ""
    if m := re.search(r"^MemTotal:\s+(\d+) kB", text, re.M):
        return int(m[1]) // 1024
    if ddr_total_mib:
        return ddr_total_mib - current.total - KERNEL_OVERHEAD_MIB
    return None


def cpu_after(cpu_now_mib: int | None, current: MemoryLayout, layout: MemoryLayout) -> int | None:
    return None if cpu_now_mib is None else cpu_now_mib + current.total - layout.total


def model_capacity(layout: MemoryLayout, settings: ProvisioningSettings) -> dict[str, int]:
    """MiB of each heap the model may use (video reservations are not the model's)."""
    return {
        "npu": layout.npu,
        "vpp": max(0, layout.vpp - settings.vpp_reserve_mib),
        "vpu": max(0, layout.vpu - settings.vpu_reserve_mib),
    }


def fit_problems(
    layout: MemoryLayout, needs: ModelNeeds | None, settings: ProvisioningSettings, cpu_after_mib: int | None
) -> list[str]:
    """Why ``layout`` does not serve the model (if any) and the box (empty: it does)."""
    problems = []
    cap = model_capacity(layout, settings)
    if needs is None:
        pass
    elif sum(cap.values()) < needs.total_mib:
        problems.append(
            f"the model needs {needs.total_mib} MiB but the heaps offer it {sum(cap.values())} MiB "
            f"(npu {cap['npu']} + vpp {cap['vpp']} + vpu {cap['vpu']} after video reservations)"
        )
    if needs is not None and max(cap.values()) < needs.largest_mib:
        problems.append(
            f"its largest single allocation ({needs.largest_mib} MiB) fits in no heap "
            f"(largest available: {max(cap.values())} MiB)"
        )
    for heap, reserve in (("vpu", settings.vpu_reserve_mib), ("vpp", settings.vpp_reserve_mib)):
        if layout.size(heap) < reserve:
            problems.append(
                f"the {heap} heap ({layout.size(heap)} MiB) is below its reservation of {reserve} MiB"
            )
    if cpu_after_mib is not None and cpu_after_mib < settings.cpu_reserve_mib:
        problems.append(
            f"only {cpu_after_mib} MiB of CPU memory would remain (keep at least {settings.cpu_reserve_mib} MiB)"
        )
    return problems


def plan_layout(
    needs: ModelNeeds,
    limits: HeapLimits,
    current: MemoryLayout,
    settings: ProvisioningSettings,
    cpu_now_mib: int | None,
) -> LayoutPlan:
    """The layout to stage, or LayoutDoesNotFit with every reason."""
    notes = [n for n in (needs.vendor_note(),) if n]
    if cpu_now_mib is None:
        notes.append("CPU memory is unknown (no /proc/meminfo, no DDR size): the CPU reserve was not checked")

    def plan(layout: MemoryLayout, reasons: list[str]) -> LayoutPlan:
        return _make_plan(layout, current, limits, cpu_now_mib, needs, reasons, notes)

    over_limit = limits.violations(current)
    problems = fit_problems(current, needs, settings, cpu_now_mib) + over_limit
    if not problems:
        return plan(current, [f"the current layout ({current}) already holds the model; nothing to change"])

    refusals: list[str] = []
    for heap, reserve in (("vpu", settings.vpu_reserve_mib), ("vpp", settings.vpp_reserve_mib)):
        if reserve > limits.size(heap):
            refusals.append(
                f"the {heap} reservation ({reserve} MiB) exceeds the board's maximum {limits.size(heap)} MiB"
            )
    reasons = [f"current layout ({current}): " + "; ".join(problems)]

    npu = min(limits.npu, needs.total_mib)
    spill = needs.total_mib - npu
    floors = {}
    for heap, reserve in (("vpp", settings.vpp_reserve_mib), ("vpu", settings.vpu_reserve_mib)):
        extra = max(0, min(limits.size(heap) - reserve, spill))
        spill -= extra
        floors[heap] = reserve + extra
        if extra:
            reasons.append(
                f"{extra} MiB of the model spill into the {heap} heap (the npu maximum is {limits.npu} MiB)"
            )
    if spill > 0:
        refusals.append(
            f"the model needs {needs.total_mib} MiB but this board's heaps can give it at most "
            f"{needs.total_mib - spill} MiB (maxima {limits.npu}/{limits.vpu}/{limits.vpp} MiB npu/vpu/vpp, "
            f"reservations vpu {settings.vpu_reserve_mib}, vpp {settings.vpp_reserve_mib})"
        )
    reasons.append(
        f"npu {npu} MiB holds the model's {needs.total_mib} MiB"
        if npu == needs.total_mib
        else f"npu at its maximum {npu} MiB"
    )
    # Keep today's video heaps where the CPU reserve allows (video apps keep working), within the maxima.
    sizes = {h: max(floors[h], min(current.size(h), limits.size(h))) for h in ("vpu", "vpp")}
    layout = MemoryLayout(npu=npu, vpu=sizes["vpu"], vpp=sizes["vpp"])
    left = cpu_after(cpu_now_mib, current, layout)
    if left is not None and left < settings.cpu_reserve_mib:
        deficit = settings.cpu_reserve_mib - left
        for heap in ("vpu", "vpp"):
            cut = min(deficit, sizes[heap] - floors[heap])
            if cut > 0:
                sizes[heap] -= cut
                deficit -= cut
                reasons.append(
                    f"{heap} shrinks by {cut} MiB to keep {settings.cpu_reserve_mib} MiB of CPU memory"
                )
        layout = MemoryLayout(npu=npu, vpu=sizes["vpu"], vpp=sizes["vpp"])
        left = cpu_after(cpu_now_mib, current, layout)
        if deficit > 0:
            refusals.append(
                f"keeping {settings.cpu_reserve_mib} MiB of CPU memory is impossible: the model and the video "
                f"reservations leave only {left} MiB"
            )
    cap = model_capacity(layout, settings)
    if max(cap.values()) < needs.largest_mib:
        refusals.append(
            f"the largest single allocation ({needs.largest_mib} MiB) exceeds every heap this board allows "
            f"(largest: {max(cap.values())} MiB)"
        )
    if refusals:
        raise LayoutDoesNotFit(
            f"no layout on this board holds {needs.name}: " + "; ".join(refusals),
            hint="pick a smaller model (int4, shorter SEQLEN), lower the video reservations or "
            "provisioning.cpu_reserve_mib",
        )
    if layout != current:
        reasons.append(
            f"cpu memory after the change: {left} MiB" if left is not None else "cpu memory unknown"
        )
    return plan(layout, reasons)


def plan_pinned(
    layout: MemoryLayout,
    limits: HeapLimits,
    current: MemoryLayout,
    settings: ProvisioningSettings,
    cpu_now_mib: int | None,
    needs: ModelNeeds | None = None,
    notes: tuple[str, ...] = (),
) -> LayoutPlan:
    """A layout the operator pinned (``--layout``), checked like a computed one: within the board's
    maxima, keeping the CPU reserve and the video reservations, holding the model when one is given.
    ``changed`` compares normalized layouts, so a pinned layout the box already runs stages nothing."""
    left = cpu_after(cpu_now_mib, current, layout)
    problems = limits.violations(layout) + fit_problems(layout, needs, settings, left)
    if problems:
        raise LayoutDoesNotFit(
            f"the pinned layout ({layout}) cannot be used on this board: " + "; ".join(problems),
            hint="pin a layout within the maxima `llm-tpu provision plan` prints, or plan for the model "
            "instead of pinning",
        )
    changed = layout != current  # normalized MiB on both sides
    reasons = [
        f"pinned layout {layout}" + ("" if changed else ": the box already runs it; nothing to change")
    ]
    if changed and left is not None:
        reasons.append(f"cpu memory after the change: {left} MiB")
    vendor = [n for n in (needs.vendor_note() if needs else None,) if n]
    return _make_plan(layout, current, limits, cpu_now_mib, needs, reasons, [*notes, *vendor])


def _make_plan(
    layout: MemoryLayout,
    current: MemoryLayout,
    limits: HeapLimits,
    cpu_now_mib: int | None,
    needs: ModelNeeds | None,
    reasons: list[str],
    notes: list[str],
) -> LayoutPlan:
    """The plan value; ``changed`` compares the normalized layouts, nothing else."""
    return LayoutPlan(
        layout=layout,
        current=current,
        limits=limits,
        changed=layout != current,
        reasons=tuple(reasons),
        cpu_after_mib=cpu_after(cpu_now_mib, current, layout),
        need_mib=needs.total_mib if needs else 0,
        largest_mib=needs.largest_mib if needs else 0,
        notes=tuple(notes),
    )
