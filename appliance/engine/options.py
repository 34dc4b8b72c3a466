"""What a caller chooses about an engine: its kind and its options (a typed value, not ``**kwargs``).

The engine kinds are listed here once; the manifest, the config schema and the CLI take them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from appliance.errors import ModelLoadError

__all__ = [
    "DEFAULT_HOST_QUANT",
    "ENGINE_CHOICES",
    "ENGINE_KINDS",
    "HOST_QUANTS",
    "EngineChoice",
    "EngineKind",
    "EngineOptions",
    "HostQuant",
    "check_device_count",
    "parse_device_ids",
]

# What a model manifest may name: ``auto`` resolves to one of the others (engine.select.resolve_auto).
EngineKind = Literal["auto", "sail", "bmrt", "host"]
# What the service config and ``llm-tpu serve`` also accept: ``scripted`` replays a text (tests, benchmarks).
EngineChoice = Literal[EngineKind, "scripted"]

ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)
ENGINE_CHOICES: tuple[str, ...] = get_args(EngineChoice)

# How the host engine stores its weights (model.host_quant): as the model ships them, or int8 / int4
# weight-only; auto: int4 for weights that came from a 4-bit GGUF (int4 gives back those very weights, at
# about 3x fp32's decode speed), none for the rest.
HostQuant = Literal["auto", "none", "int8", "int4"]
HOST_QUANTS: tuple[str, ...] = get_args(HostQuant)
DEFAULT_HOST_QUANT: HostQuant = "auto"


@dataclass(frozen=True)
class EngineOptions:
    """Options for opening an engine; each engine reads the ones that concern it, None means its default."""

    threads: int | None = None  # host: CPU threads (None: all cores)
    libdir: str | None = None  # bmrt: runtime libraries (None: libsophon; a cmodel directory on x86)
    decrypt_lib: str | None = None  # bmrt/sail: cipher library for encrypted bmodels
    devices: tuple[int, ...] | None = None  # bmrt/sail: device ids (None: 0 .. device_num-1)
    vocab_size: int | None = None  # bmrt/sail: the tokenizer's vocabulary, when the bmodel pads it
    dtype: str = "float32"  # host: torch dtype of the weights
    max_seq_len: int | None = None  # host: cap the context (None: the model's)
    host_quant: HostQuant = DEFAULT_HOST_QUANT  # host: weight quantization
    # host: what names the weights (the model manifest's checksum), the key of the quantization cache;
    # None: the sizes and modification times of the model's files
    weights_id: str | None = None
    # host: how the weights were quantized before they were stored (the manifest's quantization, e.g.
    # "Q4_1 (dequantized to f32)"): what host_quant auto goes by
    source_quant: str | None = None


def parse_device_ids(value: str | int | Sequence[int | str]) -> tuple[int, ...]:
    """``"2,3"`` (the vendor demos' ``--devid``), ``2`` or ``[2, 3]`` -> ``(2, 3)``; ValueError says why."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("no device ids given (write them like 0 or 2,3)")
    parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    ids: list[int] = []
    for part in parts:
        text = str(part).strip()
        if not text.isdigit():
            raise ValueError(f"device id {text!r} is not a whole number >= 0 (write them like 2,3)")
        if int(text) in ids:
            raise ValueError(f"device id {text} is given twice")
        ids.append(int(text))
    if not ids:
        raise ValueError("no device ids given (write them like 0 or 2,3)")
    return tuple(ids)


def check_device_count(bmodel_name: str, device_num: int, devices: Sequence[int] | None) -> list[int]:
    """The device ids to open: the given ones, which must be as many as the bmodel was compiled for,
    or 0 .. device_num-1."""
    if devices is None:
        return list(range(device_num))
    if len(devices) != device_num:
        given = ",".join(str(d) for d in devices)
        example = ",".join(str(d) for d in range(device_num))
        raise ModelLoadError(
            f"{bmodel_name} is compiled for {device_num} device(s), but {len(devices)} device id(s) "
            f"were given ({given})",
            hint=f"give {device_num} ids: --devid {example} (config: model.devices [{example.replace(',', ', ')}])",
        )
    return list(devices)
