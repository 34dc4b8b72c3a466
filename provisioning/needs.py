"""What a model needs from the TPU, computed from the bmodel itself (appliance.bmodel.memory).

The bmodel reader gives ``model_tool --info``'s figures (weights, instructions, runtime) plus what the
tool leaves out (io_alone I/O that holds the KV cache, KV buffers the application allocates) and the
largest single allocation. Here we add a margin and compare with the thresholds the vendor READMEs quote
(copy-pasted, not measured: sophgo-facts.md section 7), saying when they disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.bmodel.memory import BmodelMemory, read_bmodel_memory
from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ProvisioningError
from appliance.models.store import ModelStore
from provisioning.layout import MIB

__all__ = [
    "ModelNeeds",
    "margin_bytes",
    "needs_for_model",
    "needs_from_figures",
    "needs_from_memory",
    "vendor_threshold_mib",
]

# (pattern on the bmodel/model name, quantization) -> the vendor READMEs' "TPU total >= N MB".
_VENDOR_THRESHOLDS: tuple[tuple[str, str, int], ...] = (
    (r"qwen[0-9.]*-7b", "fp16", 12800),
    (r"qwen[0-9.]*-7b", "int8", 7168),
    (r"qwen[0-9.]*-7b", "int4", 4608),
    (r"baichuan2-7b", "int8", 9216),
    (r"baichuan2-7b", "int4", 6144),
    (r"minicpm-2b", "int4", 2300),
)
_QUANT = re.compile(r"_(int4|int8|fp16|f16|bf16|w4bf16|w4f16|w8bf16|w8f16)(?:_|$)")


def _ceil_mib(value: int) -> int:
    return -(-value // MIB)


def _quantization(name: str) -> str:
    m = _QUANT.search(name.lower())
    return {"f16": "fp16"}.get(m[1], m[1]) if m else "unknown"


def vendor_threshold_mib(name: str, quantization: str) -> int | None:
    lowered = name.lower()
    for pattern, quant, mb in _VENDOR_THRESHOLDS:
        if re.search(pattern, lowered) and quant == quantization:
            return mb
    return None


@dataclass(frozen=True)
class ModelNeeds:
    """TPU memory one model needs, in bytes except where the name says MiB."""

    name: str
    source: str
    weight_bytes: int
    instruct_bytes: int
    runtime_bytes: int
    io_alone_bytes: int
    kv_app_bytes: int
    margin_bytes: int
    largest_single_bytes: int
    quantization: str = "unknown"

    @property
    def device_mem_bytes(self) -> int:
        """What ``model_tool --info`` reports as ``device mem size``."""
        return self.weight_bytes + self.instruct_bytes + self.runtime_bytes

    @property
    def total_bytes(self) -> int:
        return self.device_mem_bytes + self.io_alone_bytes + self.kv_app_bytes + self.margin_bytes

    @property
    def total_mib(self) -> int:
        return _ceil_mib(self.total_bytes)

    @property
    def largest_mib(self) -> int:
        return _ceil_mib(self.largest_single_bytes)

    @property
    def vendor_threshold_mib(self) -> int | None:
        return vendor_threshold_mib(self.name, self.quantization)

    def vendor_note(self) -> str | None:
        """A sentence comparing our figure with the vendor README's, when there is one."""
        vendor = self.vendor_threshold_mib
        if vendor is None:
            return None
        ours = self.total_mib
        if abs(ours - vendor) <= 0.1 * vendor:
            return f"the vendor README asks for {vendor} MB of TPU memory; computed {ours} MiB agrees"
        side = "more" if ours > vendor else "less"
        return (
            f"the vendor README asks for {vendor} MB of TPU memory, but this bmodel needs {ours} MiB "
            f"({side}); the README's figure is copy-pasted, the bmodel's is computed, we use ours"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "weight_bytes": self.weight_bytes,
            "instruct_bytes": self.instruct_bytes,
            "runtime_bytes": self.runtime_bytes,
            "device_mem_bytes": self.device_mem_bytes,
            "io_alone_bytes": self.io_alone_bytes,
            "kv_app_bytes": self.kv_app_bytes,
            "margin_bytes": self.margin_bytes,
            "total_bytes": self.total_bytes,
            "total_mib": self.total_mib,
            "largest_single_bytes": self.largest_single_bytes,
            "largest_mib": self.largest_mib,
            "quantization": self.quantization,
            "vendor_threshold_mib": self.vendor_threshold_mib,
            "vendor_note": self.vendor_note(),
        }


def margin_bytes(settings: ProvisioningSettings, base: int) -> int:
    """The room planned over a need of ``base`` bytes: margin_mib, or margin_fraction of it."""
    return max(settings.margin_mib * MIB, int(base * settings.margin_fraction))


def needs_from_memory(
    memory: BmodelMemory, settings: ProvisioningSettings, *, name: str, source: str = ""
) -> ModelNeeds:
    return ModelNeeds(
        name=name,
        source=source,
        weight_bytes=memory.weight_bytes,
        instruct_bytes=memory.instruct_bytes,
        runtime_bytes=memory.runtime_bytes,
        io_alone_bytes=memory.io_alone_bytes,
        kv_app_bytes=memory.kv_app_bytes,
        margin_bytes=margin_bytes(settings, memory.total_bytes),
        largest_single_bytes=memory.largest_single_allocation,
        quantization=_quantization(name),
    )


def needs_from_figures(total_mib: int, largest_mib: int | None = None, *, name: str = "given") -> ModelNeeds:
    """Needs stated on the command line (``--need-mib``), for planning before a model is installed."""
    if total_mib <= 0:
        raise ProvisioningError(f"a model cannot need {total_mib} MiB", hint="pass a positive --need-mib")
    largest = largest_mib if largest_mib is not None else total_mib
    return ModelNeeds(
        name=name,
        source="command line",
        weight_bytes=total_mib * MIB,
        instruct_bytes=0,
        runtime_bytes=0,
        io_alone_bytes=0,
        kv_app_bytes=0,
        margin_bytes=0,
        largest_single_bytes=min(largest, total_mib) * MIB,
    )


def needs_for_model(ref: str, settings: ProvisioningSettings) -> ModelNeeds:
    """Needs of an installed model (by name), a model directory, or a ``.bmodel`` file."""
    path = Path(ref)
    if path.suffix == ".bmodel" and path.is_file():
        bmodel = path
    else:
        model = ModelStore().resolve(ref)
        bmodels = [model.path / f.path for f in model.manifest.weights if f.path.endswith(".bmodel")]
        if not bmodels:
            raise ProvisioningError(
                f"model {model.name!r} has no .bmodel: it runs on the CPU and needs no TPU memory",
                hint="provision for a bmodel (llm-tpu models pull NAME)",
            )
        bmodel = bmodels[0]
    return needs_from_memory(read_bmodel_memory(bmodel), settings, name=bmodel.stem, source=str(bmodel))
