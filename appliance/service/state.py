"""The service's shared state: config, scheduler, metrics, phase and the model it serves
(loaded by appliance.models.loader, the one loading path)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.config.schema import ApplianceConfig
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.models.loader import LoadedModel
from appliance.service.metrics import ServiceMetrics
from appliance.service.scheduler import Scheduler

__all__ = ["STATE", "DeviceProbe", "ServiceState", "device_nodes"]

# What /api/status shows under "tpu". `llm-tpu serve` passes provisioning's probe (device nodes and the
# live ION heaps); the service itself knows nothing of the board.
DeviceProbe = Callable[[], dict[str, Any]]


def device_nodes() -> dict[str, Any]:
    """The TPU device nodes this process can see; the default probe (no ION heaps)."""
    devices = sorted(str(p) for p in Path("/dev").glob("bm-sophon*"))
    return {
        "devices": devices,
        "ctl": os.path.exists("/dev/bmdev-ctl"),
        "heaps_unavailable": "this service was started without a board probe",
    }


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
    device_probe: DeviceProbe = device_nodes

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


STATE: web.AppKey[ServiceState] = web.AppKey("state", ServiceState)
