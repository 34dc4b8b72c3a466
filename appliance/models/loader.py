"""Load the configured model: the one path from a ``model:`` config section to a running generator.

The service (``llm-tpu serve``) and the commands that generate in-process (``ask``, ``chat --plain``,
``bench``) all load through :func:`load_model` and get a :class:`LoadedModel`. ``engine: scripted``
(tests and benchmarks) runs the scripted engine on a real tokenizer and chat template; every other
engine resolves the model reference in the store and opens the engine the manifest (or the section)
names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config.schema import GenerationDefaults, ModelSection
from appliance.engine.options import EngineOptions
from appliance.engine.protocol import Engine
from appliance.engine.scripted import ScriptedEngine, script_from_text
from appliance.engine.select import open_engine
from appliance.errors import ConfigError
from appliance.generation.defaults import model_defaults, read_generation_config
from appliance.generation.loop import Generator
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import GenerationOptions
from appliance.models.directory import has_tokenizer
from appliance.models.manifest import MANIFEST_NAME
from appliance.models.store import ModelStore, manifest_for_path

__all__ = ["LoadedModel", "load_model"]


@dataclass
class LoadedModel:
    """The one model a process runs, with what the APIs and commands report about it."""

    name: str
    generator: Generator
    engine: Engine
    load_duration_ns: int
    details: dict[str, Any] = field(default_factory=dict)  # family, quantization, checksum, path ...
    aliases: frozenset[str] = frozenset()
    model_sampling: dict[str, Any] = field(default_factory=dict)  # from the model's generation_config.json

    def answers_to(self, requested: str) -> bool:
        """Clients must name a model; accept ours by any of its names (or none)."""
        return requested in ("", self.name) or requested in self.aliases

    def defaults(self, config: GenerationDefaults | None = None) -> GenerationOptions:
        """Options for what a request leaves out: the config's, the model's own where the config sets none."""
        return model_defaults(self.model_sampling, config)

    def close(self) -> None:
        self.engine.close()


def _load_scripted(section: ModelSection, prefix_reuse: bool) -> LoadedModel:
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
    if not tok_dir.is_dir() or not has_tokenizer(tok_dir):
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
        wedge_after_tokens=section.scripted.wedge_after_tokens,
    )
    template = make_template(template_name, tokenizer, default_system=default_system)
    load_ns = time.perf_counter_ns() - start
    generator = Generator(engine, tokenizer, template, load_duration_ns=load_ns, prefix_reuse=prefix_reuse)
    name = section.name or "scripted"
    details = {"family": "scripted", "template": template.name}
    sampling = read_generation_config([tok_dir, ref])
    return LoadedModel(name, generator, engine, load_ns, details, frozenset({section.ref}), sampling)


def load_model(
    section: ModelSection | None = None, *, store: ModelStore | None = None, prefix_reuse: bool = True
) -> LoadedModel:
    """Load the model ``section`` names (default: the embedded model); may take minutes on a device.

    ``engine: auto`` takes the manifest's choice (which is itself ``auto`` unless the model says).
    """
    section = section or ModelSection.model_validate({})
    if section.engine == "scripted":
        return _load_scripted(section, prefix_reuse)
    start = time.perf_counter_ns()
    model = (store or ModelStore()).resolve(section.ref)
    manifest = model.manifest
    tokenizer = ChatTokenizer.from_dir(model.tokenizer_dir)
    template = make_template(manifest.template, tokenizer, default_system=manifest.default_system_prompt)
    options = EngineOptions(
        threads=section.threads,
        host_quant=section.host_quant,
        weights_id=manifest.checksum or None,
        source_quant=manifest.quantization,
        libdir=section.libdir,
        decrypt_lib=section.decrypt_lib,
        devices=section.devices,
    )
    engine = open_engine(
        manifest.engine if section.engine == "auto" else section.engine,
        model.path,
        [f.path for f in manifest.weights],
        name=manifest.name,
        options=options,
    )
    load_ns = time.perf_counter_ns() - start
    generator = Generator(engine, tokenizer, template, load_duration_ns=load_ns, prefix_reuse=prefix_reuse)
    details = {
        "family": manifest.family,
        "quantization": manifest.quantization,
        "max_seq_len": engine.limits.max_seq_len,
        "checksum": manifest.checksum,
        "path": str(model.path),
        "memory_need_bytes": manifest.memory_need_bytes,
    }
    return LoadedModel(
        section.name or model.name,
        generator,
        engine,
        load_ns,
        details,
        frozenset({model.name, section.ref}),
        read_generation_config([model.path, model.tokenizer_dir]),
    )
