"""Which LLM-TPU net layout a bmodel uses, discovered from its nets (never from the file name).

Shared by the bmrt and sail engines and by ``llm-tpu models info``. The input is a list of
:class:`NetDesc` (built from the bmodel reader, or from a runtime's own net info); the output is an
:class:`LlmLayout` that says everything the orchestration needs: sizes (SEQLEN, hidden, layers, KV
heads, head dim, vocab), the 16-bit activation type, fused greedy ``lm_head`` or logits, which heads
exist, static or dynamic prefill, where the KV cache lives (addr_mode per ``block_cache_i``) and
the number of devices with per-device I/O indexing (sophgo-facts.md sections 1 and 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.bmodel.reader import BmodelInfo

__all__ = [
    "DTYPE_BF16",
    "DTYPE_F16",
    "DTYPE_F32",
    "DTYPE_I32",
    "IoDesc",
    "LayoutError",
    "LlmLayout",
    "NetDesc",
    "discover_layout",
    "io_index",
    "net_descs",
]

DTYPE_F32, DTYPE_F16, DTYPE_I32, DTYPE_BF16 = 0, 1, 6, 8
SAMPLE_HEADS = ("sample_head", "penalty_sample_head")
# Per device: block_i has 3 inputs (2 when dynamic: no mask) and 3 outputs; block_cache_i 5 and 3.
BLOCK_OUTPUTS = 3
CACHE_INPUTS = 5


class LayoutError(ValueError):
    """The nets do not form an LLM-TPU layout this appliance can run."""


@dataclass(frozen=True)
class IoDesc:
    name: str
    shape: tuple[int, ...]
    dtype: int  # bm_data_type_t code


@dataclass(frozen=True)
class NetDesc:
    name: str
    inputs: tuple[IoDesc, ...]
    outputs: tuple[IoDesc, ...]
    is_dynamic: bool = False
    addr_mode: int = 0


def net_descs(info: BmodelInfo) -> list[NetDesc]:
    """Stage-0 descriptions of a bmodel's nets (LLM nets have one stage)."""
    out = []
    for n in info.nets:
        if not n.stages:
            continue
        st = n.stages[0]
        out.append(
            NetDesc(
                name=n.name,
                inputs=tuple(IoDesc(t.name, t.shape, t.dtype_code) for t in st.inputs),
                outputs=tuple(IoDesc(t.name, t.shape, t.dtype_code) for t in st.outputs),
                is_dynamic=n.is_dynamic,
                addr_mode=n.addr_mode,
            )
        )
    return out


def io_index(slot: int, device: int, per_device: int) -> int:
    """Index of ``slot`` of ``device`` in a net whose I/O is laid out device after device."""
    return device * per_device + slot


@dataclass(frozen=True)
class LlmLayout:
    seq_len: int
    hidden: int
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int  # 0 when only a fused greedy lm_head exists (no logits anywhere in the bmodel)
    act_dtype: int  # DTYPE_BF16 or DTYPE_F16: activations and masks, moved as raw 16-bit words
    lm_head_greedy: bool  # argmax fused into lm_head: it returns a token, never logits
    heads: tuple[str, ...]  # greedy_head / sample_head / penalty_sample_head present
    dynamic_prefill: bool
    prefill_has_mask: bool
    cache_addr_modes: tuple[int, ...]  # per layer, of block_cache_i
    devices: int

    @property
    def sample_head(self) -> str | None:
        return next((h for h in SAMPLE_HEADS if h in self.heads), None)

    @property
    def cache_addr_mode(self) -> int:
        return self.cache_addr_modes[0]

    @property
    def dtype_name(self) -> str:
        return "bf16" if self.act_dtype == DTYPE_BF16 else "f16"

    @property
    def kv_row_elements(self) -> int:
        """Elements of one KV row [KV, HD]; the element offset of row p is p * this."""
        return self.kv_heads * self.head_dim

    def to_json(self) -> dict[str, Any]:
        return {
            "seq_len": self.seq_len,
            "hidden": self.hidden,
            "layers": self.layers,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab": self.vocab,
            "dtype": self.dtype_name,
            "lm_head": "greedy" if self.lm_head_greedy else "logits",
            "heads": list(self.heads),
            "dynamic_prefill": self.dynamic_prefill,
            "cache_addr_mode": self.cache_addr_mode,
            "devices": self.devices,
            "kv_cache_bytes": self.layers * 2 * self.seq_len * self.kv_row_elements * 2,
        }


def _need(nets: dict[str, NetDesc], name: str) -> NetDesc:
    net = nets.get(name)
    if net is None:
        raise LayoutError(f"the bmodel has no {name!r} net")
    return net


def _check_counts(net: NetDesc, n_in: int, n_out: int, devices: int) -> None:
    if len(net.inputs) != n_in * devices or len(net.outputs) != n_out * devices:
        raise LayoutError(
            f"net {net.name!r} has {len(net.inputs)} inputs and {len(net.outputs)} outputs; "
            f"expected {n_in} and {n_out} per device for {devices} device(s)"
        )


def discover_layout(nets: Sequence[NetDesc], *, device_num: int = 1) -> LlmLayout:
    by_name = {n.name: n for n in nets}
    if "embedding_unshare" in by_name or any(n.startswith("block_unshare_") for n in by_name):
        raise LayoutError(
            "this is a 2024 share-cache bmodel (block_unshare_i nets); only the standard "
            "embedding/block/block_cache/lm_head layout is supported"
        )
    layers = 0
    while f"block_{layers}" in by_name:
        layers += 1
    if layers == 0:
        raise LayoutError("the bmodel has no block_0 net: it is not an LLM-TPU bmodel")
    devices = max(1, device_num)
    embed = _need(by_name, "embedding")
    _need(by_name, "embedding_cache")
    lm_head = _need(by_name, "lm_head")
    block0 = by_name["block_0"]
    dynamic_prefill = block0.is_dynamic
    per_dev_in = len(block0.inputs) // devices
    if per_dev_in not in (2, 3):
        raise LayoutError(f"block_0 has {len(block0.inputs)} inputs, not 2 or 3 per device")
    cache_modes = []
    for i in range(layers):
        blk = _need(by_name, f"block_{i}")
        cache = _need(by_name, f"block_cache_{i}")
        _check_counts(blk, per_dev_in, BLOCK_OUTPUTS, devices)
        _check_counts(cache, CACHE_INPUTS, BLOCK_OUTPUTS, devices)
        cache_modes.append(cache.addr_mode)
    seq_len = embed.inputs[0].shape[-1]
    hist = by_name["block_cache_0"].inputs[3]
    if len(hist.shape) != 4 or hist.shape[1] != seq_len:
        raise LayoutError(f"block_cache_0 history_k has shape {list(hist.shape)}, not [1, SEQLEN, KV, HD]")
    hidden = block0.inputs[0].shape[-1]
    act = block0.inputs[0].dtype
    if act not in (DTYPE_BF16, DTYPE_F16):
        raise LayoutError(f"block_0 takes dtype code {act}; only f16 and bf16 activations are supported")
    out0 = lm_head.outputs[0]
    greedy = out0.dtype == DTYPE_I32
    vocab = 0 if greedy else out0.shape[-1]
    heads = tuple(h for h in ("greedy_head", *SAMPLE_HEADS) if h in by_name)
    if not vocab:
        for h in heads:
            vocab = by_name[h].inputs[0].shape[-1]
    return LlmLayout(
        seq_len=seq_len,
        hidden=hidden,
        layers=layers,
        kv_heads=hist.shape[2],
        head_dim=hist.shape[3],
        vocab=vocab,
        act_dtype=act,
        lm_head_greedy=greedy,
        heads=heads,
        dynamic_prefill=dynamic_prefill,
        prefill_has_mask=per_dev_in == 3,
        cache_addr_modes=tuple(cache_modes),
        devices=devices,
    )
