"""Read a Hugging Face model directory without torch: ``config.json`` and safetensors (numpy only).

:func:`read_spec` turns the config into a :class:`ModelSpec` and refuses, before any work, every field
the generator does not implement, naming the field. :class:`Checkpoint` reads tensors as float32.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.compile.rope import RopeScaling, read_rope
from appliance.compile.unsupported import UnsupportedModel, unsupported
from appliance.errors import ModelFormatError

__all__ = ["Checkpoint", "ModelSpec", "UnsupportedModel", "read_spec"]

_ARCHS = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}
_DTYPES = {"BF16": 2, "F16": 2, "F32": 4}


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "qwen2" | "qwen3" | "llama"
    num_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    rope_theta: float
    tied: bool
    dtype: str
    rope_scaling: RopeScaling | None = None  # linear or llama3 (appliance.compile.rope)

    @property
    def qk_norm(self) -> bool:
        """Qwen3: an RMSNorm over each head of q and k (weight [head_dim]) before the rotary."""
        return self.family == "qwen3"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _load_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(
            f"{src} has no config.json", hint="give a Hugging Face model directory or a .gguf file"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not a JSON object")
    return data


def _decimal_of_f32(value: float) -> float:
    """A value that is exactly a float32 (read back from f32 storage, as a GGUF's rms epsilon: 1e-06
    becomes 9.999999974752427e-07) is taken as the shortest decimal with that float32, the number the
    model was written with, so that a GGUF builds the same bmodel as the directory it came from. A
    decimal from a config.json (1e-06) is not exactly a float32 and stays as it is."""
    f32 = np.float32(value)
    if float(f32) != value:
        return value
    return float(np.format_float_scientific(f32, unique=True))


def read_spec(src: Path) -> ModelSpec:
    """The model's shape from config.json; an UnsupportedModel names the first field we cannot do."""
    cfg = _load_config(src)
    archs = cfg.get("architectures") or []
    if isinstance(archs, list) and archs:
        arch = archs[0]
        if arch not in _ARCHS:
            raise unsupported("architectures", archs, f"architecture {arch}")
    else:  # configs written from a GGUF carry only model_type
        kind = cfg.get("model_type", "?")
        arch = next((a for a, fam in _ARCHS.items() if fam == kind), "")
        if not arch:
            raise unsupported("model_type", kind, f"model type {kind}")
    if cfg.get("quantization_config"):
        method = cfg["quantization_config"].get("quant_method", "?")
        raise unsupported("quantization_config.quant_method", method, "pre-quantized checkpoints")
    if cfg.get("hidden_act", "silu") != "silu":
        raise unsupported("hidden_act", cfg["hidden_act"], f"activation {cfg['hidden_act']}")
    if cfg.get("use_sliding_window"):
        raise unsupported("use_sliding_window", True, "sliding-window attention")
    if cfg.get("partial_rotary_factor", 1.0) != 1.0:
        raise unsupported("partial_rotary_factor", cfg["partial_rotary_factor"], "partial rotary")
    if cfg.get("pretraining_tp", 1) != 1:
        raise unsupported("pretraining_tp", cfg["pretraining_tp"], "tensor-parallel pretraining slices")
    theta, scaling = read_rope(cfg)
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        spec = ModelSpec(
            family=_ARCHS[arch],
            num_layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(cfg["intermediate_size"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            vocab=int(cfg["vocab_size"]),
            rms_eps=_decimal_of_f32(float(cfg["rms_norm_eps"])),
            rope_theta=theta,
            tied=bool(cfg.get("tie_word_embeddings", False)),
            dtype=str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"),
            rope_scaling=scaling,
        )
    except KeyError as exc:
        raise ModelFormatError(f"{src / 'config.json'} has no {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{src / 'config.json'}: {exc}") from None
    if spec.heads % spec.kv_heads:
        raise unsupported("num_key_value_heads", spec.kv_heads, "KV heads that do not divide the heads")
    if spec.dtype not in ("bfloat16", "float16", "float32"):
        raise unsupported("dtype", spec.dtype, f"checkpoint dtype {spec.dtype}")
    return spec


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class Checkpoint:
    """The tensors of every ``*.safetensors`` in a directory, read lazily as float32 numpy arrays."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self._entries: dict[str, _Entry] = {}
        files = sorted(src.glob("*.safetensors"))
        if not files:
            raise ModelFormatError(
                f"{src} has no *.safetensors", hint="the compiler reads safetensors or GGUF"
            )
        for f in files:
            self._index(f)

    def _index(self, path: Path) -> None:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ModelFormatError(f"{path} is not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", raw)
            try:
                header = json.loads(fh.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ModelFormatError(f"{path} is not a safetensors file (bad header)") from None
        base = 8 + n
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            dtype = meta.get("dtype")
            if dtype not in _DTYPES:
                raise UnsupportedModel(f"{path.name}: tensor {name} has dtype {dtype}; bf16, f16 or f32 only")
            start, end = meta["data_offsets"]
            self._entries[name] = _Entry(path, dtype, tuple(meta["shape"]), base + start, base + end)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ModelFormatError(f"{self.src}: the checkpoint has no tensor {name}") from None

    def read(self, name: str) -> np.ndarray:
        e = self._entry(name)
        count = int(np.prod(e.shape)) if e.shape else 1
        if e.end - e.start != count * _DTYPES[e.dtype]:
            raise ModelFormatError(f"{e.file.name}: tensor {name} has a wrong byte length")
        raw = np.fromfile(e.file, dtype=np.uint8, count=e.end - e.start, offset=e.start)
        if e.dtype == "BF16":
            data = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif e.dtype == "F16":
            data = raw.view("<f2").astype(np.float32)
        else:
            data = raw.view("<f4").astype(np.float32)
        return data.reshape(e.shape)
