"""The service's shared state: config, scheduler, metrics, phase and the model it serves
(loaded by appliance.models.loader, the one loading path)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from appliance.config.schema import ApplianceConfig
from appliance.errors import ApplianceError, ModelNotFound, ServiceUnavailable
from appliance.models.loader import LoadedModel
from appliance.service.metrics import ServiceMetrics
from appliance.service.model_switch import request_keep_alive
from appliance.service.scheduler import Scheduler

if TYPE_CHECKING:
    from appliance.service.model_switch import ModelSwitcher

__all__ = ["STATE", "DeviceProbe", "ModelAdmin", "ServiceState", "device_nodes"]

# What /api/status shows under "tpu". `llm-tpu serve` passes provisioning's probe (device nodes and the
# live ION heaps); the service itself knows nothing of the board.
DeviceProbe = Callable[[], dict[str, Any]]


class ModelAdmin(Protocol):
    """Installs and removes models in the store for /api/pull and /api/delete. `llm-tpu serve` passes
    provisioning's (provisioning.model_admin: the code of `llm-tpu models pull/import/rm`); the service
    itself installs nothing, and without one the admin routes answer 501."""

    def install(self, ref: str, *, name: str | None, sha256: str | None, tokenizer: str | None) -> Path:
        """Install ``ref`` (a model directory on this machine, a catalog name, URL, dfss path or .bmodel)."""
        ...

    def remove(self, name: str) -> Path:
        """Remove the installed model ``name``; its former path."""
        ...


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
    phase: str = "loading"  # loading | ready | failed | stalled | stopping
    failure: ApplianceError | None = None
    model: LoadedModel | None = None
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    device_probe: DeviceProbe = device_nodes
    model_admin: ModelAdmin | None = None  # /api/pull and /api/delete (None: answered 501)
    switcher: ModelSwitcher | None = None  # models on demand (set by the runner)

    async def model_for(self, requested: str, keep_alive: float | str | None = None) -> LoadedModel:
        """The loaded model ``requested`` names, switching models when needed (model_switch.py); without a
        switcher (a bare app in tests) the one loaded model."""
        ka = request_keep_alive(keep_alive)
        if self.switcher is not None:
            return await self.switcher.acquire(requested, ka)
        served = self.require_model()
        if not served.answers_to(requested):
            raise ModelNotFound(
                f"model {requested!r} is not served here", hint=f"this appliance serves {served.name!r}"
            )
        return served

    def require_model(self) -> LoadedModel:
        if self.phase == "stopping":
            raise ServiceUnavailable("the service is stopping", hint="retry once it has restarted")
        if self.phase == "stalled" and self.failure is not None:
            raise ServiceUnavailable(self.failure.message, hint=self.failure.hint)
        if self.model is None or self.phase != "ready":
            if self.failure is not None:
                raise ServiceUnavailable(
                    f"the model failed to load: {self.failure.message}", hint=self.failure.hint
                )
            raise ServiceUnavailable("the model is still loading", hint="retry when GET /health answers 200")
        return self.model


STATE: web.AppKey[ServiceState] = web.AppKey("state", ServiceState)
