"""What a caller chooses about an engine: its kind and its options (a typed value, not ``**kwargs``).

The engine kinds are listed here once; the manifest, the config schema and the CLI take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["ENGINE_CHOICES", "ENGINE_KINDS", "EngineChoice", "EngineKind", "EngineOptions"]

# What a model manifest may name: ``auto`` resolves to one of the others (engine.select.resolve_auto).
EngineKind = Literal["auto", "sail", "bmrt", "host"]
# What the service config and ``llm-tpu serve`` also accept: ``scripted`` replays a text (tests, benchmarks).
EngineChoice = Literal[EngineKind, "scripted"]

ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)
ENGINE_CHOICES: tuple[str, ...] = get_args(EngineChoice)


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
