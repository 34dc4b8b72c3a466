"""Engine choice: ``auto`` | ``sail`` | ``bmrt`` | ``host``, from the manifest or the caller.

The engine layer knows model files, not manifests: the caller (appliance.models.loader) passes the
model directory and its weight files.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.engine.bmrt.engine import BmrtEngine
from appliance.engine.bmrt.lib import DEVICE_LIBDIR
from appliance.engine.host import HostEngine
from appliance.engine.options import ENGINE_KINDS, EngineOptions
from appliance.engine.protocol import Engine
from appliance.engine.sail import SailEngine
from appliance.errors import EngineUnavailable, ModelFormatError

__all__ = ["TPU_DEVICE_GLOB", "RuntimeProbe", "open_engine", "probe_runtimes", "resolve_auto", "tpu_present"]

TPU_DEVICE_GLOB = "/dev/bm-sophon*"


def tpu_present() -> bool:
    """A BM1684X device node exists (SoC box or PCIe card): the boundary tests fake."""
    return bool(glob.glob(TPU_DEVICE_GLOB))


def _sail_importable() -> bool:
    try:
        return importlib.util.find_spec("sophon.sail") is not None
    except (ImportError, ValueError):
        return False


def _libsophon_present() -> bool:
    return (DEVICE_LIBDIR / "libbmrt.so.1.0").exists() or (DEVICE_LIBDIR / "libbmrt.so").exists()


# Where a packaged install looks for optional add-ons (torch + transformers for the host engine, a
# cp311 sophon-sail wheel): the venv reads this directory after its own site-packages (a .pth file).
ADDONS_DIR = "/usr/local/lib/llm-tpu-appliance/site-packages"
HOST_ENGINE_INSTALLER = "/opt/llm-tpu-appliance/bin/install-host-engine"


@dataclass(frozen=True)
class RuntimeProbe:
    """Which engines could run on this machine, and what to do when none can."""

    tpu_devices: tuple[str, ...]
    libsophon: bool
    sail: bool
    torch: bool

    @property
    def tpu_runtime(self) -> bool:
        return bool(self.tpu_devices) and (self.libsophon or self.sail)

    def summary(self) -> str:
        parts = [
            f"TPU device {', '.join(self.tpu_devices)}"
            if self.tpu_devices
            else f"no TPU device ({TPU_DEVICE_GLOB})",
            f"libsophon {DEVICE_LIBDIR}" if self.libsophon else "no libsophon",
            "sophon.sail" if self.sail else "no sophon.sail",
            "torch (host engine)" if self.torch else "no torch (host engine)",
        ]
        return ", ".join(parts)

    def next_step(self) -> str | None:
        """What to install when no engine can run a model here; None when one can."""
        if self.tpu_runtime or self.torch:
            return None
        if self.tpu_devices:
            return "install the vendor SDK's libsophon (and sophon-sail): apt install libsophon"
        installer = HOST_ENGINE_INSTALLER if Path(HOST_ENGINE_INSTALLER).exists() else None
        how = f"sudo {installer}" if installer else "pip install 'llm-tpu-appliance[host]'"
        return (
            "on a BM1684X box install the vendor SDK (apt install libsophon); on a host without a TPU add "
            f"the CPU engine (torch + transformers, about 1 GB): {how}, then set model.engine: host and a "
            "Hugging Face model in /etc/llm-tpu/conf.d/"
        )


def probe_runtimes() -> RuntimeProbe:
    """Look for the TPU device nodes, libsophon, sophon.sail and torch (imports nothing heavy)."""
    try:
        torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        torch = False
    return RuntimeProbe(
        tpu_devices=tuple(sorted(glob.glob(TPU_DEVICE_GLOB))),
        libsophon=_libsophon_present(),
        sail=_sail_importable(),
        torch=torch,
    )


def resolve_auto(name: str, is_bmodel: bool, options: EngineOptions) -> str:
    """``auto``: sail (importable, device present), then bmrt on a device, then host.

    A bmodel on a machine without a TPU runs only on the cmodel, and only when a libdir is given
    explicitly (option ``libdir`` or LLM_TPU_BMRT_LIBDIR): a developer choice, never a silent one.
    """
    if not is_bmodel:
        return "host"
    if tpu_present():
        if _sail_importable():
            return "sail"
        if _libsophon_present():
            return "bmrt"
    if options.libdir or os.environ.get("LLM_TPU_BMRT_LIBDIR"):
        return "bmrt"
    raise EngineUnavailable(
        f"{name} is a .bmodel and this machine has no TPU ({TPU_DEVICE_GLOB}) with libsophon or sail",
        hint="on a BM1684X box install libsophon (and sail); on x86, run it on the cmodel: "
        "scripts/fetch-vendor-runtime.sh, then LLM_TPU_BMRT_LIBDIR=$PWD/.cache/vendor/tpu-mlir-1.30.2/lib",
    )


def _open_tpu(kind: str, name: str, bmodels: Sequence[Path], options: EngineOptions) -> Engine:
    if not bmodels:
        raise ModelFormatError(
            f"{name} has no .bmodel: the {kind} engine runs bmodels only",
            hint="use --engine host for a Hugging Face model directory",
        )
    path = bmodels[0]
    devices = list(options.devices) if options.devices is not None else None
    if kind == "sail":
        return SailEngine.open(
            path, decrypt_lib=options.decrypt_lib, devices=devices, vocab_size=options.vocab_size
        )
    return BmrtEngine.open(
        path,
        libdir=options.libdir,
        allow_cmodel=True,
        decrypt_lib=options.decrypt_lib,
        devices=devices,
        vocab_size=options.vocab_size,
    )


def open_engine(
    kind: str,
    model_dir: Path,
    weights: Sequence[str],
    *,
    name: str,
    options: EngineOptions | None = None,
) -> Engine:
    """Open the engine ``kind`` (``auto`` resolves) on the model ``name`` in ``model_dir``.

    ``weights`` are the weight files relative to ``model_dir`` (a manifest's weights).
    """
    options = options or EngineOptions()
    if kind not in ENGINE_KINDS:
        raise EngineUnavailable(f"unknown engine {kind!r}", hint=f"use one of {', '.join(ENGINE_KINDS)}")
    bmodels = [model_dir / w for w in weights if w.endswith(".bmodel")]
    is_bmodel = bool(bmodels)
    if kind == "auto":
        kind = resolve_auto(name, is_bmodel, options)
    if kind in ("bmrt", "sail"):
        return _open_tpu(kind, name, bmodels, options)
    if kind == "host":
        if is_bmodel:
            raise ModelFormatError(
                f"{name} is a .bmodel, which only the TPU engines (sail, bmrt) run",
                hint="use a Hugging Face model directory for the host engine",
            )
        return HostEngine(
            model_dir,
            threads=options.threads,
            dtype=options.dtype,
            max_seq_len=options.max_seq_len,
            quant=options.host_quant,
            weights_id=options.weights_id,
            source_quant=options.source_quant,
        )
    raise EngineUnavailable(f"unknown engine {kind!r}", hint=f"use one of {', '.join(ENGINE_KINDS)}")
