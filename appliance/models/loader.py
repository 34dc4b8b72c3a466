"""Load a model by reference: store lookup, engine, tokenizer, template, generation loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from appliance.engine.options import EngineOptions
from appliance.engine.protocol import Engine
from appliance.engine.select import open_engine
from appliance.generation.defaults import model_defaults
from appliance.generation.loop import Generator
from appliance.generation.templates import ChatTemplate, make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import GenerationOptions
from appliance.models.manifest import InstalledModel
from appliance.models.store import ModelStore

__all__ = ["LoadedModel", "load_model"]


@dataclass
class LoadedModel:
    model: InstalledModel
    engine: Engine
    tokenizer: ChatTokenizer
    template: ChatTemplate
    generator: Generator
    load_duration_ns: int

    @property
    def manifest(self) -> Any:
        return self.model.manifest

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def defaults(self) -> GenerationOptions:
        """Generation options for what a caller does not set (the model's generation_config.json)."""
        return model_defaults([self.model.path, self.model.tokenizer_dir])

    def close(self) -> None:
        self.engine.close()


def load_model(
    ref: str | None = None,
    *,
    engine: str | None = None,
    store: ModelStore | None = None,
    engine_options: EngineOptions | None = None,
    prefix_reuse: bool = True,
) -> LoadedModel:
    """Resolve ``ref`` and load it; ``engine`` None takes the manifest's choice."""
    start = time.perf_counter_ns()
    model = (store or ModelStore()).resolve(ref)
    manifest = model.manifest
    tokenizer = ChatTokenizer.from_dir(model.tokenizer_dir)
    template = make_template(manifest.template, tokenizer, default_system=manifest.default_system_prompt)
    eng = open_engine(
        engine or manifest.engine,
        model.path,
        [f.path for f in manifest.weights],
        name=manifest.name,
        options=engine_options,
    )
    load_ns = time.perf_counter_ns() - start
    generator = Generator(eng, tokenizer, template, load_duration_ns=load_ns, prefix_reuse=prefix_reuse)
    return LoadedModel(model, eng, tokenizer, template, generator, load_ns)
