"""Engine choice: ``auto`` | ``sail`` | ``bmrt`` | ``host``, from the manifest or the caller."""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path
from typing import Any

from appliance.engine.protocol import Engine
from appliance.errors import EngineUnavailable, ModelFormatError
from appliance.models.manifest import ENGINE_KINDS, ModelManifest

__all__ = ["open_engine", "resolve_auto"]

TPU_DEVICE_GLOB = "/dev/bm-sophon*"


def _tpu_present() -> bool:
    return bool(glob.glob(TPU_DEVICE_GLOB))


def _sail_importable() -> bool:
    try:
        return importlib.util.find_spec("sophon.sail") is not None
    except (ImportError, ValueError):
        return False


def resolve_auto(name: str, is_bmodel: bool, options: dict[str, Any]) -> str:
    """``auto``: sail (importable, device present), then bmrt on a device, then host.

    A bmodel on a machine without a TPU runs only on the cmodel, and only when a libdir is given
    explicitly (option ``libdir`` or LLM_TPU_BMRT_LIBDIR): a developer choice, never a silent one.
    """
    if not is_bmodel:
        return "host"
    from appliance.engine.bmrt.lib import DEVICE_LIBDIR

    if _tpu_present():
        if _sail_importable():
            return "sail"
        if (DEVICE_LIBDIR / "libbmrt.so.1.0").exists() or (DEVICE_LIBDIR / "libbmrt.so").exists():
            return "bmrt"
    if options.get("libdir") or os.environ.get("LLM_TPU_BMRT_LIBDIR"):
        return "bmrt"
    raise EngineUnavailable(
        f"{name} is a .bmodel and this machine has no TPU ({TPU_DEVICE_GLOB}) with libsophon or sail",
        hint="on a BM1684X box install libsophon (and sail); on x86, run it on the cmodel: "
        "scripts/fetch-vendor-runtime.sh, then LLM_TPU_BMRT_LIBDIR=$PWD/.cache/vendor/tpu-mlir-1.30.2/lib",
    )


def _open_tpu(kind: str, model_dir: Path, manifest: ModelManifest, options: dict[str, Any]) -> Engine:
    bmodels = [f for f in manifest.weights if f.path.endswith(".bmodel")]
    if not bmodels:
        raise ModelFormatError(
            f"{manifest.name} has no .bmodel: the {kind} engine runs bmodels only",
            hint="use --engine host for a Hugging Face model directory",
        )
    path = model_dir / bmodels[0].path
    common: dict[str, Any] = {
        "decrypt_lib": options.get("decrypt_lib"),
        "devices": options.get("devices"),
        "vocab_size": options.get("vocab_size"),
    }
    if kind == "sail":
        from appliance.engine.sail import SailEngine

        return SailEngine.open(path, **common)
    from appliance.engine.bmrt.engine import BmrtEngine

    return BmrtEngine.open(path, libdir=options.get("libdir"), allow_cmodel=True, **common)


def open_engine(kind: str, model_dir: Path, manifest: ModelManifest, **options: Any) -> Engine:
    """Open the engine ``kind`` (``auto`` resolves) on an installed model."""
    if kind not in ENGINE_KINDS:
        raise EngineUnavailable(f"unknown engine {kind!r}", hint=f"use one of {', '.join(ENGINE_KINDS)}")
    weights = manifest.weights
    is_bmodel = any(f.path.endswith(".bmodel") for f in weights)
    if kind == "auto":
        kind = resolve_auto(manifest.name, is_bmodel, options)
    if kind in ("bmrt", "sail"):
        return _open_tpu(kind, model_dir, manifest, options)
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
    raise EngineUnavailable(f"unknown engine {kind!r}", hint=f"use one of {', '.join(ENGINE_KINDS)}")
