"""Which catalog models fit this box's TPU memory layout as it is now (for `llm-tpu models catalog`).

Before a bmodel is downloaded only the catalog's figure is known (the vendor threshold or our
estimate, catalog.json says which), so the check compares that figure plus the provisioning margin with
the heaps the model may use (video reservations excluded). The largest single allocation is unknown
until the bmodel can be read: `llm-tpu provision check --model NAME` then decides for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from appliance.config.provisioning import ProvisioningSettings
from provisioning.board import read_board
from provisioning.catalog import CatalogEntry
from provisioning.layout import MIB
from provisioning.needs import margin_bytes
from provisioning.plan import model_capacity

__all__ = ["CatalogFit", "catalog_fits"]

Verdict = Literal["fits", "too-big", "unknown"]


@dataclass(frozen=True)
class CatalogFit:
    entry: CatalogEntry
    need_mib: int  # the catalog's figure plus the margin
    capacity_mib: int | None  # what the live heaps offer a model; None: no layout readable
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            **self.entry.to_json(),
            "need_mib": self.need_mib,
            "capacity_mib": self.capacity_mib,
            "fits": self.verdict,
        }


def catalog_fits(
    entries: list[CatalogEntry], settings: ProvisioningSettings
) -> tuple[list[CatalogFit], list[str]]:
    """A verdict per entry, and the problems met reading the board (why a verdict is unknown)."""
    state = read_board(settings, with_memory_edit=False)
    live = state.live
    capacity = sum(model_capacity(live, settings).values()) if live is not None else None
    fits = []
    for e in entries:
        need = e.memory_mib + -(-margin_bytes(settings, e.memory_mib * MIB) // MIB)
        verdict: Verdict = "unknown" if capacity is None else ("fits" if need <= capacity else "too-big")
        fits.append(CatalogFit(e, need, capacity, verdict))
    return fits, list(state.problems)
