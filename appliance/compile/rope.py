"""Rotary position embedding of a checkpoint: its theta and scaling from config.json, and the cos/sin
tables block_i's npz carries (the bmodel has no RoPE parameters of its own: only these tables).

Scalings that only change the inverse frequencies are supported, computed in float32 exactly as
transformers 5 computes them: ``linear`` (every frequency divided by ``factor``) and ``llama3``
(Llama 3.1/3.2: long wavelengths divided by ``factor``, short ones kept, a smooth blend between).
Scalings that depend on the sequence length at run time or scale the attention (dynamic, yarn,
longrope) are refused, naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.compile.unsupported import unsupported
from appliance.errors import ModelFormatError

__all__ = ["RopeScaling", "inv_freq", "read_rope", "rotary_tables"]

KINDS = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    kind: str  # "linear" | "llama3"
    factor: float
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_position_embeddings: int = 8192  # llama3 only


def _number(block: dict[str, Any], field: str, key: str, default: float | None = None) -> float:
    value = block.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ModelFormatError(
            f"config.json {field}.{key} must be a positive number, not {json.dumps(value)}"
        )
    return float(value)


def _scaling(field: str, block: dict[str, Any]) -> RopeScaling | None:
    kind = block.get("rope_type", block.get("type", "default"))
    if kind not in KINDS:
        raise unsupported(f"{field}.rope_type", kind, f"rope scaling {kind!r}")
    if block.get("partial_rotary_factor", 1.0) != 1.0:
        raise unsupported(f"{field}.partial_rotary_factor", block["partial_rotary_factor"], "partial rotary")
    if kind == "default":
        return None
    factor = _number(block, field, "factor")
    if kind == "linear":
        return RopeScaling("linear", factor)
    low = _number(block, field, "low_freq_factor")
    high = _number(block, field, "high_freq_factor")
    if high <= low:
        raise ModelFormatError(f"config.json {field}: high_freq_factor must be above low_freq_factor")
    original = int(_number(block, field, "original_max_position_embeddings"))
    return RopeScaling("llama3", factor, low, high, original)


def read_rope(cfg: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from ``rope_parameters`` (transformers 5) or ``rope_scaling`` + ``rope_theta``."""
    scaling = None
    for field in ("rope_parameters", "rope_scaling"):
        block = cfg.get(field)
        if isinstance(block, dict):
            scaling = _scaling(field, block) or scaling
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"]), scaling
    return float(cfg.get("rope_theta", 10000.0)), scaling


def inv_freq(theta: float, head_dim: int, scaling: RopeScaling | None) -> np.ndarray:
    """The head_dim/2 inverse frequencies in float32 (transformers' arithmetic, op for op)."""
    d = head_dim
    freq = np.float32(1.0) / (np.float32(theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
    if scaling is None:
        return freq
    factor = np.float32(scaling.factor)
    if scaling.kind == "linear":
        return freq / factor
    old = scaling.original_max_position_embeddings
    low_wavelen = old / scaling.low_freq_factor
    high_wavelen = old / scaling.high_freq_factor
    wavelen = np.float32(2 * math.pi) / freq
    scaled = np.where(wavelen > low_wavelen, freq / factor, freq)
    smooth = (np.float32(old) / wavelen - np.float32(scaling.low_freq_factor)) / np.float32(
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (np.float32(1.0) - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rotary_tables(
    theta: float, head_dim: int, scaling: RopeScaling | None, seq: int
) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [seq, 1, head_dim] in float32: positions times the inverse frequencies, both halves."""
    freqs = np.outer(np.arange(seq, dtype=np.float32), inv_freq(theta, head_dim, scaling))
    emb = np.concatenate([freqs, freqs], axis=1)
    return (
        np.cos(emb).astype(np.float32).reshape(seq, 1, head_dim),
        np.sin(emb).astype(np.float32).reshape(seq, 1, head_dim),
    )
