"""The service's shared state and the model it serves (how a model is loaded for serving)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.config.schema import ApplianceConfig, GenerationDefaults, ModelSection
from appliance.engine.options import EngineOptions
from appliance.engine.protocol import Engine
from appliance.engine.scripted import ScriptedEngine, script_from_text
from appliance.errors import ApplianceError, ConfigError, ServiceUnavailable
from appliance.generation.defaults import model_defaults
from appliance.generation.loop import Generator
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.tokenizer_formats import detect_format
from appliance.generation.types import GenerationOptions
from appliance.models.loader import load_model
from appliance.models.manifest import MANIFEST_NAME
from appliance.models.store import manifest_for_path
from appliance.service.metrics import ServiceMetrics
from appliance.service.scheduler import ChatGenerator, Scheduler
from provisioning.ion import IonUnavailable, read_heaps

__all__ = ["STATE", "ServedModel", "ServiceState", "load_served_model", "tpu_status"]


@dataclass
class ServedModel:
    """The one model the service runs, with what the API reports about it."""

    name: str
    generator: ChatGenerator
    engine: Engine
    load_duration_ns: int
    close: Callable[[], None]
    details: dict[str, Any] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()
    defaults: GenerationOptions = field(default_factory=GenerationOptions)  # for options a request omits

    def answers_to(self, requested: str) -> bool:
        """Clients must name a model; accept ours by any of its names (or none)."""
        return requested in ("", self.name) or requested in self.aliases


@dataclass
class ServiceState:
    config: ApplianceConfig
    scheduler: Scheduler
    metrics: ServiceMetrics
    socket_path: Path | None = None
    tcp_token: str | None = None
    phase: str = "loading"  # loading | ready | failed | stopping
    failure: ApplianceError | None = None
    model: ServedModel | None = None
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)

    def require_model(self) -> ServedModel:
        if self.phase == "stopping":
            raise ServiceUnavailable("the service is stopping", hint="retry once it has restarted")
        if self.model is None or self.phase != "ready":
            if self.failure is not None:
                raise ServiceUnavailable(
                    f"the model failed to load: {self.failure.message}", hint=self.failure.hint
                )
            raise ServiceUnavailable("the model is still loading", hint="retry when GET /health answers 200")
        return self.model


def _scripted(section: ModelSection, generation: GenerationDefaults | None) -> ServedModel:
    """The scripted test engine on a real tokenizer and chat template.

    ``model.ref`` is a tokenizer directory (served with its own chat_template) or a model directory with
    a manifest, whose template and tokenizer directory are used: every family's prompt layout and stop
    ids run end to end through the service without a device.
    """
    start = time.perf_counter_ns()
    ref = Path(section.ref)
    template_name, default_system, tok_dir = "tokenizer", None, ref
    if (ref / MANIFEST_NAME).is_file():
        model = manifest_for_path(ref)
        template_name = model.manifest.template
        default_system = model.manifest.default_system_prompt
        tok_dir = model.tokenizer_dir
    if not tok_dir.is_dir() or detect_format(tok_dir) is None:
        raise ConfigError(
            f"model.ref {section.ref!r} holds no tokenizer",
            hint="the scripted engine needs model.ref to be a directory with tokenizer files "
            "(tokenizer.json, *.tiktoken, tokenizer.model or vocab.json + merges.txt) or a model manifest",
        )
    tokenizer = ChatTokenizer.from_dir(tok_dir)
    engine = ScriptedEngine(
        script_from_text(tokenizer, section.scripted.text),
        vocab_size=tokenizer.vocab_size,
        step_delay_s=section.scripted.step_delay_ms / 1000,
        prefill_delay_per_token_s=section.scripted.prefill_delay_ms / 1000,
        model_path=str(tok_dir),
    )
    template = make_template(template_name, tokenizer, default_system=default_system)
    load_ns = time.perf_counter_ns() - start
    generator = Generator(engine, tokenizer, template, load_duration_ns=load_ns)
    name = section.name or "scripted"
    details = {"family": "scripted", "template": template.name}
    defaults = model_defaults([tok_dir, ref], generation)
    return ServedModel(
        name, generator, engine, load_ns, engine.close, details, frozenset({section.ref}), defaults
    )


def load_served_model(section: ModelSection, generation: GenerationDefaults | None = None) -> ServedModel:
    """Load the configured model (runs on the engine thread; may take minutes on a device);
    ``generation`` is the config's section of request defaults."""
    if section.engine == "scripted":
        return _scripted(section, generation)
    engine_options = EngineOptions(
        threads=section.threads,
        libdir=section.libdir,
        decrypt_lib=section.decrypt_lib,
        devices=section.devices,
    )
    loaded = load_model(
        section.ref,
        engine=None if section.engine == "auto" else section.engine,
        engine_options=engine_options,
    )
    manifest = loaded.manifest
    details = {
        "family": manifest.family,
        "quantization": manifest.quantization,
        "max_seq_len": loaded.engine.limits.max_seq_len,
        "checksum": manifest.checksum,
        "path": str(loaded.model.path),
        "memory_need_bytes": manifest.memory_need_bytes,
    }
    name = section.name or loaded.name
    return ServedModel(
        name,
        loaded.generator,
        loaded.engine,
        loaded.load_duration_ns,
        loaded.close,
        details,
        frozenset({loaded.name, section.ref}),
        model_defaults([loaded.model.path, loaded.model.tokenizer_dir], generation),
    )


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
