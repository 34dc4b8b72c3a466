"""Parse a layout an operator pins by hand (``--layout npu=7615,vpu=0xb8000000,vpp=4G``) into MiB.

Operators write sizes the way the vendor tools print them: decimal MiB (``7615``), ``M``/``MiB`` or
``G``/``GiB`` suffixes, or hex bytes as ``memory_edit.sh`` takes them (``0x1dbf00000``). Everything is
normalized here to a :class:`~provisioning.layout.MemoryLayout` of whole MiB (hex bytes are floored, as
the vendor script and the ION debugfs report them), so that a pinned layout compares equal to the
layout the box reports after booting it: a value that never compares equal to its own normalized form
would make every run stage it again and reboot the box in a loop.
"""

from __future__ import annotations

import re

from appliance.errors import ProvisioningError
from provisioning.layout import HEAPS, MIB, MemoryLayout

__all__ = ["parse_layout_spec"]

_VALUE = re.compile(r"^(?:(0x[0-9a-f]+)|(\d+(?:\.\d+)?)\s*(m|mib|g|gib)?)$")
_HINT = "write it as npu=N,vpu=N,vpp=N in MiB (7615, 7615M, 7.5G) or hex bytes (0x1dbf00000)"


def _mib(heap: str, text: str, notes: list[str]) -> int:
    m = _VALUE.match(text.strip().lower())
    if not m:
        raise ProvisioningError(f"layout: {heap}={text!r} is not a size", hint=_HINT)
    if m[1]:
        size = int(m[1], 16)
        if size % MIB:
            notes.append(f"{heap} {text} is not a whole number of MiB: using {size // MIB} MiB")
        return size // MIB
    number = float(m[2]) * (1024 if m[3] in ("g", "gib") else 1)
    if number != int(number):
        raise ProvisioningError(f"layout: {heap}={text} is not a whole number of MiB", hint=_HINT)
    return int(number)


def parse_layout_spec(spec: str) -> tuple[MemoryLayout, list[str]]:
    """``npu=...,vpu=...,vpp=...`` (commas or spaces) -> the layout in MiB and notes on rounding."""
    sizes: dict[str, int] = {}
    notes: list[str] = []
    for item in filter(None, re.split(r"[,\s]+", spec.strip())):
        heap, sep, value = item.partition("=")
        heap = heap.strip().lower()
        if not sep or heap not in HEAPS:
            raise ProvisioningError(
                f"layout: {item!r} is not <heap>=<size> (heaps: npu, vpu, vpp)", hint=_HINT
            )
        if heap in sizes:
            raise ProvisioningError(f"layout: {heap} is given twice", hint=_HINT)
        sizes[heap] = _mib(heap, value, notes)
    missing = [h for h in HEAPS if h not in sizes]
    if missing:
        raise ProvisioningError(
            f"layout: {', '.join(missing)} missing (all three heaps are written together)", hint=_HINT
        )
    return MemoryLayout(**sizes), notes
