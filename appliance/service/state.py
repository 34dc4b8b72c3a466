"""The service's shared state: config, scheduler, metrics, phase and the model it serves
(loaded by appliance.models.loader, the one loading path)."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.config.schema import ApplianceConfig
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.models.loader import LoadedModel
from appliance.service.metrics import ServiceMetrics
from appliance.service.scheduler import Scheduler
from provisioning.ion import IonUnavailable, read_heaps

__all__ = ["STATE", "ServiceState", "tpu_status"]


@dataclass
class ServiceState:
    config: ApplianceConfig
    scheduler: Scheduler
    metrics: ServiceMetrics
    socket_path: Path | None = None
    tcp_token: str | None = None
    phase: str = "loading"  # loading | ready | failed | stopping
    failure: ApplianceError | None = None
    model: LoadedModel | None = None
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)

    def require_model(self) -> LoadedModel:
        if self.phase == "stopping":
            raise ServiceUnavailable("the service is stopping", hint="retry once it has restarted")
        if self.model is None or self.phase != "ready":
            if self.failure is not None:
                raise ServiceUnavailable(
                    f"the model failed to load: {self.failure.message}", hint=self.failure.hint
                )
            raise ServiceUnavailable("the model is still loading", hint="retry when GET /health answers 200")
        return self.model


def tpu_status() -> dict[str, Any]:
    """TPU device nodes and ION heap use, where this process can see them (root on the box)."""
    devices = sorted(str(p) for p in Path("/dev").glob("bm-sophon*"))
    out: dict[str, Any] = {"devices": devices, "ctl": os.path.exists("/dev/bmdev-ctl")}
    try:
        out["heaps"] = {name: dataclasses.asdict(h) for name, h in read_heaps(Path("/")).items()}
    except (IonUnavailable, OSError) as exc:
        out["heaps_unavailable"] = str(exc)
    return out


STATE: web.AppKey[ServiceState] = web.AppKey("state", ServiceState)
