"""Engine choice: ``auto`` | ``sail`` | ``bmrt`` | ``host``, from the manifest or the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.engine.protocol import Engine
from appliance.errors import EngineUnavailable, ModelFormatError
from appliance.models.manifest import ENGINE_KINDS, ModelManifest

__all__ = ["open_engine"]


def open_engine(kind: str, model_dir: Path, manifest: ModelManifest, **options: Any) -> Engine:
    """Open the engine ``kind`` (``auto`` resolves) on an installed model."""
    if kind not in ENGINE_KINDS:
        raise EngineUnavailable(f"unknown engine {kind!r}", hint=f"use one of {', '.join(ENGINE_KINDS)}")
    weights = manifest.weights
    is_bmodel = any(f.path.endswith(".bmodel") for f in weights)
    if kind == "auto":
        kind = "bmrt" if is_bmodel else "host"
    if kind == "host":
        if is_bmodel:
            raise ModelFormatError(
                f"{manifest.name} is a .bmodel, which only the TPU engines (sail, bmrt) run",
                hint="use a Hugging Face model directory for the host engine",
            )
        from appliance.engine.host import HostEngine

        return HostEngine(
            model_dir,
            threads=options.get("threads"),
            dtype=options.get("dtype", "float32"),
            max_seq_len=options.get("max_seq_len"),
        )
    raise EngineUnavailable(
        f"the {kind} engine is not available in this build",
        hint="use --engine host with a Hugging Face model directory",
    )
