"""Weight-only quantization for the host engine: int8 or int4 weights, fp32 activations, torch's own
CPU kernels (``torch._weight_int8pack_mm``, ``torch._weight_int4pack_mm_for_cpu``).

Decode on a CPU reads every weight once per token, so it is memory-bandwidth bound: fp32 weights of
SmolLM2-135M are 540 MB a token, int8 135 MB, int4 (+ its scales) about 110 MB.

- ``int8``: per output channel (symmetric, scale = max |w| / 127).
- ``int4``: groups of 32 along the input (asymmetric: min and max of the group map to 0 and 15). A Q4_1
  GGUF stores exactly this (blocks of 32 with a scale and a minimum), so for the embedded model int4
  gives back the GGUF's own weights. The output head (tied to the embedding in small models) and the
  input embedding stay int8 per row; a tied pair shares one int8 copy.
- torch's kernels are fast on x86 for bf16 activations only (fp32 takes a scalar path, 50x slower),
  so a quantized layer rounds its input to bf16 and returns fp32 (int8 applies its fp32 scales to the
  kernel's output); everything between the layers (norms, attention, residuals) stays fp32.
- The kernels run one GEMV per input row: right for decode (one row), slow for a prompt. From
  DENSE_ROWS rows a layer multiplies by its dequantized weight with the fp32 GEMM instead, rounding
  like the kernel (bf16 in, bf16 scales, bf16 out), so a prompt prefilled whole or in pieces (prefix
  reuse) gives the same logits. The dequantized copy is made on the first such call and kept: prefill
  costs what fp32 weights cost, decode reads only the quantized ones.

The model's structure (which weights are fused, cached and how) is the decoder's (host_decoder).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = [
    "DENSE_ROWS",
    "INT4_GROUP",
    "DenseLinear",
    "Int4Linear",
    "Int8Embedding",
    "Int8Linear",
    "Linear",
    "cache_key",
    "dense_linear",
    "linear_from_state",
    "quantized_linear",
]

INT4_GROUP = 32  # a Q4_1 / Q4_0 block
# From this many input rows a quantized layer uses its dequantized weight and the fp32 GEMM: measured on
# SmolLM2-135M (2 cores), one kernel row costs about 1/8 of reading the fp32 weights once.
DENSE_ROWS = 8
# The layout of the cached tensors (host_decoder's names): part of the cache key.
CACHE_FORMAT = "decoder-1"


def cache_key(model_dir: Path, weight_ids: str, mode: str, torch_version: str) -> str:
    """A short name for the quantized weights of ``model_dir``: what identifies its fp32 weights
    (the manifest checksum, or sizes and mtimes), the mode, torch's version and the cache format."""
    digest = hashlib.sha256(
        f"{model_dir.resolve()}|{weight_ids}|{mode}|{torch_version}|{CACHE_FORMAT}".encode()
    )
    return f"{mode}-{digest.hexdigest()[:16]}"


def _nn() -> Any:
    import torch

    return torch


def _int8_rows(weight: Any) -> tuple[Any, Any]:
    """Symmetric int8 per row: (int8 [N, K], fp32 scales [N])."""
    torch = _nn()
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scales.contiguous()


def _int4_groups(weight: Any, group: int) -> tuple[Any, Any]:
    """Asymmetric int4 in groups along the input: (torch's packed int4, fp32 [K/group, N, 2] of
    scale and zero, where w = (q - 8) * scale + zero)."""
    torch = _nn()
    w = weight.detach().float()
    n, k = w.shape
    g = w.reshape(n, k // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((g - lo) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
    zero = lo + 8 * scale
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
    sz = torch.stack([scale.reshape(n, -1).t(), zero.reshape(n, -1).t()], dim=-1).contiguous()
    return packed, sz


def _bf16_round(x: Any) -> Any:
    torch = _nn()
    return x.to(torch.bfloat16).float()


def _named(prefix: str, **tensors: Any) -> dict[str, Any]:
    """A layer's tensors under ``prefix.<name>`` for saving (an absent bias left out)."""
    return {f"{prefix}.{name}": t for name, t in tensors.items() if t is not None}


def _step_tensors(*tensors: Any) -> tuple[Any, Any, Any, Any]:
    """A layer's tensors for the compiled decode step: contiguous, an empty tensor for an absent one."""
    empty = _nn().empty(0)
    a, b, c, d = (empty if t is None else t.contiguous() for t in tensors)
    return a, b, c, d


class DenseLinear:
    """y = x W^T (+ b) with the weight as stored (fp32)."""

    def __init__(self, weight: Any, bias: Any = None) -> None:
        self.weight, self.bias = weight, bias
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self._linear = _nn().nn.functional.linear

    def __call__(self, x: Any) -> Any:
        return self._linear(x, self.weight, self.bias)

    def tensors(self, prefix: str) -> dict[str, Any]:
        return _named(prefix, weight=self.weight, bias=self.bias)

    def step_tensors(self) -> tuple[Any, Any, Any, Any]:
        """What the compiled decode step takes for this layer (host_step.cpp: weight, aux, ones, bias)."""
        return _step_tensors(self.weight, None, None, self.bias)


class Int8Linear:
    """y = x W^T (+ b), W int8 per output channel (fp32 scales)."""

    def __init__(self, weight: Any, scales: Any, bias: Any = None) -> None:
        torch = _nn()
        self.weight, self.scales, self.bias = weight, scales, bias
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self._ones = torch.ones(self.out_features, dtype=torch.bfloat16)
        self._dense: Any = None
        self._bf16, self._kernel = torch.bfloat16, torch._weight_int8pack_mm  # the direct binding

    def __call__(self, x: Any) -> Any:
        if x.shape[0] >= DENSE_ROWS:  # the kernel's rounding: bf16 in, bf16 out, then the scales
            if self._dense is None:
                self._dense = self.weight.float()
            y = _bf16_round(_nn().nn.functional.linear(_bf16_round(x), self._dense)) * self.scales
        else:
            y = self._kernel(x.to(self._bf16), self.weight, self._ones).float() * self.scales
        return y if self.bias is None else y + self.bias

    def tensors(self, prefix: str) -> dict[str, Any]:
        return _named(prefix, weight=self.weight, scales=self.scales, bias=self.bias)

    def step_tensors(self) -> tuple[Any, Any, Any, Any]:
        return _step_tensors(self.weight, self.scales, self._ones, self.bias)


class Int4Linear:
    """y = x W^T (+ b), W int4 in groups of INT4_GROUP along the input (torch's packing)."""

    def __init__(
        self, weight: Any, scales_zeros: Any, bias: Any, out_features: int, in_features: int
    ) -> None:
        torch = _nn()
        self.weight, self.scales_zeros, self.bias = weight, scales_zeros, bias
        self.in_features, self.out_features = in_features, out_features
        self._sz = scales_zeros.to(torch.bfloat16)  # what the kernel takes
        self._dense: Any = None
        self._bf16, self._kernel = torch.bfloat16, torch._weight_int4pack_mm_for_cpu  # the direct binding

    def dequantized(self) -> Any:
        """The fp32 weight [N, K] (from the kernel's bf16 scales): torch's packing undone."""
        torch = _nn()
        n, k = self.out_features, self.in_features
        if n % _BLOCK_N == 0 and _blocked_layout():
            q = _unpack_blocked(self.weight, n, k).reshape(n, k // INT4_GROUP, INT4_GROUP).float()
        else:
            nibbles = torch.stack([self.weight & 15, self.weight >> 4], dim=-1).reshape(-1)
            q = nibbles[_int4_unpack_index(n, k)].reshape(n, k // INT4_GROUP, INT4_GROUP).float()
        sz = self._sz.float().permute(1, 0, 2)[:, :, None, :]  # [N, K/group, 1, 2]
        return ((q - 8) * sz[..., 0] + sz[..., 1]).reshape(n, k)

    def __call__(self, x: Any) -> Any:
        if x.shape[0] >= DENSE_ROWS:  # the kernel's rounding: bf16 in, bf16 scales, bf16 out
            if self._dense is None:
                self._dense = self.dequantized()
            y = _bf16_round(_nn().nn.functional.linear(_bf16_round(x), self._dense))
        else:
            y = self._kernel(x.to(self._bf16), self.weight, INT4_GROUP, self._sz).float()
        return y if self.bias is None else y + self.bias

    def tensors(self, prefix: str) -> dict[str, Any]:
        return _named(prefix, weight=self.weight, scales_zeros=self.scales_zeros, bias=self.bias)

    def step_tensors(self) -> tuple[Any, Any, Any, Any]:
        return _step_tensors(self.weight, self._sz, None, self.bias)


Linear = DenseLinear | Int8Linear | Int4Linear


def _int4_fits(out_features: int, in_features: int) -> bool:
    """What torch's int4 packing takes: input a multiple of the group, output of 16."""
    return in_features % INT4_GROUP == 0 and out_features % 16 == 0


def dense_linear(weight: Any, bias: Any = None) -> DenseLinear:
    return DenseLinear(weight.detach().float().contiguous(), None if bias is None else bias.detach().float())


def quantized_linear(weight: Any, bias: Any, mode: str) -> Linear:
    """The layer for an fp32 ``weight`` [N, K] in ``mode`` (none, int8, int4; int4 falls back to int8
    for a shape torch's int4 packing does not take)."""
    if mode == "none":
        return dense_linear(weight, bias)
    b = None if bias is None else bias.detach().float().contiguous()
    n, k = int(weight.shape[0]), int(weight.shape[1])
    if mode == "int4" and _int4_fits(n, k):
        packed, sz = _int4_groups(weight, INT4_GROUP)
        return Int4Linear(packed, sz, b, n, k)
    if mode in ("int8", "int4"):
        return Int8Linear(*_int8_rows(weight), bias=b)
    raise ValueError(f"host quantization {mode!r} is not none, int8 or int4")


def linear_from_state(prefix: str, state: dict[str, Any], shape: tuple[int, int]) -> Linear:
    """The layer ``prefix`` saved by its ``tensors(prefix)``; ``shape`` is its (out, in) features.
    KeyError when the state lacks it."""
    bias = state.get(f"{prefix}.bias")
    if f"{prefix}.scales_zeros" in state:
        return Int4Linear(state[f"{prefix}.weight"], state[f"{prefix}.scales_zeros"], bias, *shape)
    if f"{prefix}.scales" in state:
        return Int8Linear(state[f"{prefix}.weight"], state[f"{prefix}.scales"], bias)
    return DenseLinear(state[f"{prefix}.weight"], bias)


class Int8Embedding:
    """An embedding table stored int8 per row; ``head()`` is the tied output layer on the same bytes."""

    def __init__(self, weight: Any, scales: Any) -> None:
        self.weight, self.scales = weight, scales

    @classmethod
    def quantize(cls, table: Any) -> Int8Embedding:
        return cls(*_int8_rows(table))

    def __call__(self, ids: Any) -> Any:
        torch = _nn()
        return self.weight[ids].to(torch.float32) * self.scales[ids].unsqueeze(-1)

    def head(self) -> Int8Linear:
        return Int8Linear(self.weight, self.scales)

    def tensors(self, prefix: str) -> dict[str, Any]:
        return _named(prefix, weight=self.weight, scales=self.scales)


_BLOCK_N = 64
_BLOCKED: list[bool] = []


def _unpack_blocked(packed: Any, n: int, k: int) -> Any:
    """torch's int4 packing read as blocks of 64 rows: for each column, 32 bytes whose low nibbles are
    the block's rows 0-31 and high nibbles rows 32-63 (a strided copy, not a gather)."""
    torch = _nn()
    p = packed.reshape(n // _BLOCK_N, k, _BLOCK_N // 2)
    return torch.cat([p & 15, p >> 4], dim=2).transpose(1, 2).reshape(n, k)


def _blocked_layout() -> bool:
    """Whether this torch packs int4 in that layout (checked once, on a random 128 x 64 weight;
    otherwise the layout is learned per shape by :func:`_int4_unpack_index`)."""
    if not _BLOCKED:
        torch = _nn()
        q = torch.randint(0, 16, (2 * _BLOCK_N, 64), dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        _BLOCKED.append(
            tuple(packed.shape) == (2 * _BLOCK_N, 32)
            and bool((_unpack_blocked(packed, 2 * _BLOCK_N, 64).int() == q).all())
        )
    return _BLOCKED[0]


_UNPACK: dict[tuple[int, int], Any] = {}


def _int4_unpack_index(n: int, k: int) -> Any:
    """For torch's int4 packing of an [n, k] weight: the position, among the packed tensor's nibbles
    (low, high of each byte, in order), of each weight in row-major order. Learned once per shape by
    packing the row and column numbers themselves, so it follows whatever layout torch uses."""
    if (n, k) not in _UNPACK:
        torch = _nn()
        rows = torch.arange(n)[:, None].expand(n, k)
        cols = torch.arange(k)[None, :].expand(n, k)

        def packed(values: Any) -> Any:
            p = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values.to(torch.int32).contiguous(), 1)
            return torch.stack([p & 15, p >> 4], dim=-1).reshape(-1).long()

        row = packed(rows % 16) + 16 * packed((rows // 16) % 16) + 256 * packed(rows // 256)
        col = packed(cols % 16) + 16 * packed((cols // 16) % 16) + 256 * packed(cols // 256)
        where = torch.empty(n * k, dtype=torch.long)
        where[row * k + col] = torch.arange(n * k)
        _UNPACK[(n, k)] = where
    return _UNPACK[(n, k)]
