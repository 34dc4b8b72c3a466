"""Models on demand, Ollama's way on one TPU: one model loaded at a time, switched when a request names another.

A request naming another installed model takes the switch lock (requests after it wait their turn behind
it, whatever model they name), waits for the running and queued generations to end, checks that the new
model's TPU memory need fits the free npu heap (with the current model's memory counted free, since it is
unloaded first), unloads the current model and loads the new one on the engine thread. The load is
charged to that request's load_duration. If the new model fails to load, the previous one is loaded
again. ``keep_alive`` (the request's, else ``model.keep_alive``) unloads an idle model after that many
seconds: 0 at once, negative never. ``model.pinned`` serves only the configured model.

The memory check needs the board probe's live ION heaps (``llm-tpu serve`` passes them); on the host and
scripted engines, or without heap figures, there is nothing to check and it is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.config.durations import parse_keep_alive
from appliance.config.schema import ModelSection
from appliance.errors import (
    ApplianceError,
    DeadlineExceeded,
    InvalidRequest,
    ModelDoesNotFit,
    ModelLoadError,
    ModelNotFound,
)
from appliance.models.loader import LoadedModel
from appliance.models.manifest import InstalledModel
from appliance.models.names import check_model_name
from appliance.models.store import ModelStore

if TYPE_CHECKING:
    from appliance.service.state import ServiceState

__all__ = ["ModelSwitcher", "request_keep_alive"]

log = logging.getLogger(__name__)
MIB = 1 << 20
HOST_ENGINES = frozenset({"host", "scripted"})
ModelLoader = Callable[[ModelSection], LoadedModel]


def request_keep_alive(value: float | str | None) -> float | str | None:
    """A request's keep_alive in seconds (None: never), or "default" when it sent none; InvalidRequest
    for a value that is no duration."""
    if value is None:
        return "default"
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise InvalidRequest(
            str(exc), hint="keep_alive: seconds, or '5m', '1h'; 0 unloads, -1 never"
        ) from None


class ModelSwitcher:
    """Owns which model is loaded; all methods run on the event loop."""

    def __init__(self, state: ServiceState, loader: ModelLoader) -> None:
        self.state = state
        self._loader = loader
        self._lock = asyncio.Lock()
        self.section: ModelSection = state.config.model  # the section of the loaded (or last) model
        self.keep_alive_s: float | None = parse_keep_alive(state.config.model.keep_alive)
        self._busy = False
        self._idle_since = time.monotonic()
        self._idle_since_wall = time.time()
        self.loaded_wall = time.time()
        self.configured_names: frozenset[str] = frozenset()  # the configured model's names, once loaded

    # -- activity ------------------------------------------------------------------------------
    def activity(self, running: int, waiting: int) -> None:
        """The scheduler's change callback: an idle model's keep_alive counts from the end of its last job."""
        busy = bool(running or waiting)
        if self._busy and not busy:
            self._idle_since, self._idle_since_wall = time.monotonic(), time.time()
        self._busy = busy

    @property
    def pinned(self) -> bool:
        return self.state.config.model.pinned

    def expires_at(self) -> float | None:
        """Wall-clock time the loaded model unloads if nothing else comes; None: never."""
        if self.keep_alive_s is None or self.pinned:
            return None
        start = time.time() if self._busy else self._idle_since_wall
        return start + self.keep_alive_s

    # -- the request side ----------------------------------------------------------------------
    def _configured(self, requested: str) -> bool:
        cfg = self.state.config.model
        names = {"", "default", cfg.ref, *([cfg.name] if cfg.name else []), *self.configured_names}
        return requested in names

    def _installed(self, requested: str) -> InstalledModel:
        served = self.state.model
        if self.pinned:
            name = served.name if served is not None else self.state.config.model.ref
            raise ModelNotFound(
                f"model {requested!r} is not served here",
                hint=f"this appliance serves only {name!r} (model.pinned is true)",
            )
        check_model_name(requested)  # a path or other non-name is a bad request, not an unknown model
        installed, _ = ModelStore().installed()
        for model in installed:
            if model.name == requested:
                return model
        names = ", ".join(sorted(m.name for m in installed)) or "none"
        raise ModelNotFound(
            f"model {requested!r} is not served here: it is not installed",
            hint=f"installed: {names}; install it with POST /api/pull or `llm-tpu models pull`",
        )

    async def acquire(self, requested: str, keep_alive: float | str | None = "default") -> LoadedModel:
        """The model ``requested`` names, loaded (switching to it when needed); the caller submits its job
        right away, without awaiting anything in between, so that no switch comes between."""
        async with self._lock:
            if self.state.phase != "ready":
                return self.state.require_model()  # raises: loading, failed, stalled or stopping
            served = self.state.model
            if served is not None and served.answers_to(requested):
                model = served
            elif self._configured(requested):  # unloaded, or another model is loaded: the configured one
                model = await self._switch(self.state.config.model, None)
            else:
                target = self._installed(requested)
                section = self.state.config.model.model_copy(
                    update={"ref": str(target.path), "name": target.name}
                )
                model = await self._switch(section, target)
            # Ollama: each request sets the model's keep_alive, its own or the default
            if keep_alive == "default":
                self.keep_alive_s = parse_keep_alive(self.state.config.model.keep_alive)
            else:
                self.keep_alive_s = keep_alive if isinstance(keep_alive, float) else None
            return model

    async def unload_if_idle_expired(self) -> None:
        """Unload the model when its keep_alive has passed and nothing runs (the expiry task calls this)."""
        expires = self.expires_at()
        if expires is None or self._busy or self.state.model is None or time.time() < expires:
            return
        if self._lock.locked() or self.state.phase != "ready":
            return
        async with self._lock:
            if self._busy or self.state.model is None:
                return
            log.info("unloading %s: keep_alive passed", self.state.model.name)
            await self._unload()

    async def expiry_loop(self, period_s: float = 0.2) -> None:
        while True:
            await asyncio.sleep(period_s)
            with contextlib.suppress(ApplianceError):
                await self.unload_if_idle_expired()

    # -- switching -----------------------------------------------------------------------------
    async def _switch(self, section: ModelSection, target: InstalledModel | None) -> LoadedModel:
        state = self.state
        timeout = state.config.scheduler.request_timeout_s
        if not await state.scheduler.wait_idle(timeout):
            raise DeadlineExceeded(
                f"waited {timeout:g} s for the running generation to end before switching models",
                hint="retry later, or set model.pinned to keep one model",
            )
        if target is not None:
            self.check_memory(target, section)
        previous = self.section if state.model is not None else None
        await self._unload()
        try:
            model = await state.scheduler.run_on_engine_thread(lambda: self._loader(section))
        except Exception as exc:
            err = exc if isinstance(exc, ApplianceError) else ModelLoadError(f"{type(exc).__name__}: {exc}")
            log.error("loading %s failed: %s", section.ref, err.message)
            if previous is not None:
                with contextlib.suppress(Exception):
                    self._installed_now(
                        await state.scheduler.run_on_engine_thread(lambda: self._loader(previous)), previous
                    )
            raise err from None
        self._installed_now(model, section)
        log.info("model %s loaded on demand (%.1f s)", model.name, model.load_duration_ns / 1e9)
        return model

    def _installed_now(self, model: LoadedModel, section: ModelSection) -> None:
        self.section = section
        self.state.model = model
        self.state.scheduler.set_generator(model.generator)
        self.state.metrics.load_seconds.set(model.load_duration_ns / 1e9)
        self.loaded_wall = time.time()
        self._idle_since, self._idle_since_wall = time.monotonic(), time.time()

    async def _unload(self) -> None:
        current = self.state.model
        if current is None:
            return
        self.state.model = None
        self.state.scheduler.set_generator(None)
        await self.state.scheduler.run_on_engine_thread(current.close)

    def check_memory(self, target: InstalledModel, section: ModelSection) -> None:
        """ModelDoesNotFit (507) when the target's need exceeds the free npu heap plus what the current
        model frees; skipped for host/scripted engines and without live heap figures."""
        engine = section.engine if section.engine != "auto" else target.manifest.engine
        need = target.manifest.memory_need_bytes
        if engine in HOST_ENGINES or section.engine in HOST_ENGINES or not need:
            return
        heaps: dict[str, Any] | None = self.state.device_probe().get("heaps")
        npu = (heaps or {}).get("npu")
        if not npu:
            log.info("no live heap figures: loading %s without a memory check", target.name)
            return
        free = max(0, int(npu["size_mib"]) - int(npu["used_mib"])) * MIB
        current = self.state.model
        freed = int(current.details.get("memory_need_bytes") or 0) if current is not None else 0
        if current is not None and current.engine.info.kind in HOST_ENGINES:
            freed = 0
        if need > free + freed:
            raise ModelDoesNotFit(
                f"model {target.name!r} needs {need / MIB:.0f} MiB of TPU memory; the npu heap has "
                f"{free / MIB:.0f} MiB free, {(free + freed) / MIB:.0f} MiB once the current model is unloaded",
                hint="use a smaller model, or grow the npu heap (llm-tpu provision)",
            )
