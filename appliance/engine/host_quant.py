"""Weight-only quantization for the host engine: int8 or int4 weights, fp32 activations, torch's own
CPU kernels (``aten._weight_int8pack_mm``, ``aten._weight_int4pack_mm_for_cpu``).

Decode on a CPU reads every weight once per token, so it is memory-bandwidth bound: fp32 weights of
SmolLM2-135M are 540 MB a token, int8 135 MB, int4 (+ its scales) about 110 MB.

- ``int8``: every Linear, per output channel (symmetric, scale = max |w| / 127).
- ``int4``: every Linear except the output head, in groups of 32 along the input (asymmetric:
  min and max of the group map to 0 and 15). A Q4_1 GGUF stores exactly this (blocks of 32 with a
  scale and a minimum), so for the embedded model int4 gives back the GGUF's own weights. The head
  (tied to the embedding in small models) stays int8.
- torch's kernels are fast on x86 for bf16 activations only (fp32 takes a scalar path, 50x slower),
  so a quantized layer rounds its input to bf16 and returns fp32 (int8 applies its fp32 scales to the
  kernel's output); everything between the layers (norms, attention, residuals) stays fp32.
- The input embedding (usually the largest tensor) is int8 per row in both modes; when it is tied to
  the head, both share one int8 copy.

The quantized weights are cached (:func:`cached_state_path`, keyed on the model's checksum, the mode
and torch's version, since the int4 packing is torch's) and loaded without the fp32 weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = [
    "INT4_GROUP",
    "cache_key",
    "load_quantized",
    "quantize_model",
    "quantized_state",
]

INT4_GROUP = 32  # a Q4_1 / Q4_0 block
# torch's int8/int4 CPU kernels run one GEMV per row of the input: from this many rows (a long prompt's
# prefill) dequantizing the weight and calling the fp32 GEMM is faster.
GEMM_ROWS = 128


def cache_key(model_dir: Path, weight_ids: str, mode: str, torch_version: str) -> str:
    """A short name for the quantized weights of ``model_dir``: what identifies its fp32 weights
    (the manifest checksum, or sizes and mtimes), the mode, and torch's version."""
    digest = hashlib.sha256(f"{model_dir.resolve()}|{weight_ids}|{mode}|{torch_version}".encode())
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


def _classes() -> tuple[type, type, type]:
    """The module classes (defined on first use: torch is an optional import)."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _define_classes()
    return _CLASSES


_CLASSES: tuple[type, type, type] | None = None


def _define_classes() -> tuple[type, type, type]:
    torch = _nn()
    nn = torch.nn
    module: Any = nn.Module  # torch is imported on first use, so its types are not known here

    class Int8Linear(module):
        """y = x W^T (+ b), W int8 per output channel."""

        def __init__(self, out_features: int, in_features: int, bias: bool, device: Any = None) -> None:
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.weight = nn.Buffer(torch.empty(out_features, in_features, dtype=torch.int8, device=device))
            self.scales = nn.Buffer(torch.empty(out_features, dtype=torch.float32, device=device))
            self.bias = nn.Buffer(torch.empty(out_features, device=device)) if bias else None
            self._ones = torch.empty(0)

        def _make_ones(self) -> Any:
            self._ones = torch.ones(self.out_features, dtype=torch.bfloat16)
            return self._ones

        def forward(self, x: Any) -> Any:
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            if x2.shape[0] >= GEMM_ROWS:  # the kernel's rounding: bf16 in, bf16 out
                y = nn.functional.linear(_bf16_round(x2), self.weight.float())
                y = _bf16_round(y) * self.scales
            else:
                ones = self._ones if self._ones.dtype == torch.bfloat16 else self._make_ones()
                y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight, ones).float()
                y = y * self.scales
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

    class Int4Linear(module):
        """y = x W^T (+ b), W int4 in groups of INT4_GROUP along the input."""

        def __init__(self, out_features: int, in_features: int, bias: bool, device: Any = None) -> None:
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.weight = nn.Buffer(
                torch.empty(out_features, in_features // 2, dtype=torch.uint8, device=device)
            )
            self.scales_zeros = nn.Buffer(
                torch.empty(in_features // INT4_GROUP, out_features, 2, dtype=torch.float32, device=device)
            )
            self.bias = nn.Buffer(torch.empty(out_features, device=device)) if bias else None
            self._sz = torch.empty(0)  # the kernel's bf16 copy, made on the first call

        def dequantized(self) -> Any:
            """The fp32 weight [N, K] (from the kernel's bf16 scales): torch's packing undone."""
            n, k = self.out_features, self.in_features
            nibbles = torch.stack([self.weight & 15, self.weight >> 4], dim=-1).reshape(-1)
            q = nibbles[_int4_unpack_index(n, k)].reshape(n, k // INT4_GROUP, INT4_GROUP).float()
            sz = self._sz.float().permute(1, 0, 2)[:, :, None, :]  # [N, K/group, 1, 2]
            return ((q - 8) * sz[..., 0] + sz[..., 1]).reshape(n, k)

        def forward(self, x: Any) -> Any:
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            if self._sz.dtype != torch.bfloat16:
                self._sz = self.scales_zeros.to(torch.bfloat16)
            if x2.shape[0] >= GEMM_ROWS:  # the kernel's rounding: bf16 in, bf16 scales, bf16 out
                y = _bf16_round(nn.functional.linear(_bf16_round(x2), self.dequantized()))
            else:
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                    x2.to(torch.bfloat16), self.weight, INT4_GROUP, self._sz
                ).float()
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

    class Int8Embedding(module):
        """An embedding table stored int8 per row (a tied head shares its buffers)."""

        def __init__(self, num: int, dim: int, device: Any = None) -> None:
            super().__init__()
            self.num_embeddings, self.embedding_dim = num, dim
            self.weight = nn.Buffer(torch.empty(num, dim, dtype=torch.int8, device=device))
            self.scales = nn.Buffer(torch.empty(num, dtype=torch.float32, device=device))

        def forward(self, ids: Any) -> Any:
            rows = nn.functional.embedding(ids, self.weight).to(torch.float32)
            return rows * self.scales[ids].unsqueeze(-1)

    return Int8Linear, Int4Linear, Int8Embedding


def _bf16_round(x: Any) -> Any:
    torch = _nn()
    return x.to(torch.bfloat16).float()


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


def _linear_targets(model: Any) -> list[tuple[Any, str, Any]]:
    """(parent, attribute, Linear) for every nn.Linear in the model, the head included."""
    torch = _nn()
    out = []
    for parent in model.modules():
        for attr, child in parent.named_children():
            if isinstance(child, torch.nn.Linear):
                out.append((parent, attr, child))
    return out


def _int4_fits(linear: Any) -> bool:
    """What torch's int4 packing takes: input a multiple of the group, output of 16."""
    return bool(linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0)


def _replace(model: Any, mode: str, quantize: bool) -> None:
    """Swap the model's Linear and input Embedding for quantized ones: with their weights quantized
    (``quantize``), or empty on the meta device (a skeleton to load cached weights into)."""
    int8_linear, int4_linear, int8_embedding = _classes()
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    tied = head is not None and emb is not None and head.weight is emb.weight
    device = None if quantize else "meta"
    new_emb = int8_embedding(emb.num_embeddings, emb.embedding_dim, device=device)
    if quantize:
        new_emb.weight, new_emb.scales = _int8_rows(emb.weight)
    for parent, attr, lin in _linear_targets(model):
        is_head = lin is head
        use4 = mode == "int4" and not is_head and _int4_fits(lin)
        cls = int4_linear if use4 else int8_linear
        new = cls(lin.out_features, lin.in_features, lin.bias is not None, device=device)
        if is_head and tied:
            new.weight, new.scales = new_emb.weight, new_emb.scales
        elif quantize and use4:
            new.weight, new.scales_zeros = _int4_groups(lin.weight, INT4_GROUP)
        elif quantize:
            new.weight, new.scales = _int8_rows(lin.weight)
        if quantize and lin.bias is not None:
            new.bias = lin.bias.detach().float().clone()
        setattr(parent, attr, new)
    model.set_input_embeddings(new_emb)


def quantize_model(model: Any, mode: str) -> Any:
    """Quantize a loaded fp32 model in place (``int8`` or ``int4``) and return it."""
    if mode not in ("int8", "int4"):
        raise ValueError(f"host quantization {mode!r} is not int8 or int4")
    _replace(model, mode, quantize=True)
    return model


def quantized_state(model: Any) -> dict[str, Any]:
    """The quantized model's tensors to save (a tied head's, which are the embedding's, left out)."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    skip = head is not None and head.weight is emb.weight
    head_names = {n for n, m in model.named_modules() if m is head} if skip else set()
    return {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if not (skip and k.rsplit(".", 1)[0] in head_names)
    }


def load_quantized(config: Any, mode: str, state: dict[str, Any]) -> Any:
    """A model of ``config`` with quantized modules holding ``state`` (from :func:`quantized_state`),
    built without allocating or reading fp32 weights. KeyError/ValueError when ``state`` does not fit."""
    torch = _nn()
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and head.weight is emb.weight
    _replace(model, mode, quantize=False)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if tied:
        head.weight, head.scales = emb.weight, emb.scales
        missing = [k for k in missing if not k.startswith(_name_of(model, head) + ".")]
    if missing or unexpected:
        raise KeyError(
            f"cached weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    # buffers computed from the config (rotary frequencies) are not saved: build those modules anew
    for parent in list(model.modules()):
        for attr, child in parent.named_children():
            if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "original_inv_freq"):
                setattr(parent, attr, type(child)(config=child.config))
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"cached weights leave {left[:3]} unset")
    return model.eval()


def _name_of(model: Any, module: Any) -> str:
    return next(n for n, m in model.named_modules() if m is module)
