"""`llm-tpu models info FILE.bmodel`: what a bmodel holds and how much TPU memory it needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from appliance.bmodel.layout import LayoutError, discover_layout, net_descs
from appliance.bmodel.memory import BmodelMemory, bmodel_memory
from appliance.bmodel.reader import BmodelInfo, NetInfo, TensorInfo, read_bmodel

__all__ = ["bmodel_info_json", "print_bmodel_info"]


def _tensor_json(t: TensorInfo) -> dict[str, Any]:
    return {
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "bytes": t.nbytes,
        "scale": t.scale,
        "zero_point": t.zero_point,
    }


def _net_json(n: NetInfo) -> dict[str, Any]:
    return {
        "index": n.index,
        "name": n.name,
        "dynamic": n.is_dynamic,
        "addr_mode": n.addr_mode,
        "cascade_device": n.cascade_device,
        "stages": [
            {
                "core_num": st.core_num,
                "subnets": len(st.subnets),
                "ctx_size": st.ctx_size,
                "io_size": st.io_size,
                "inputs": [_tensor_json(t) for t in st.inputs],
                "outputs": [_tensor_json(t) for t in st.outputs],
            }
            for st in n.stages
        ],
    }


def _vocab_from_lm_head_weights(info: BmodelInfo, hidden: int) -> int:
    """A fused greedy lm_head outputs a token id, not logits; its weights are [vocab, hidden] in 16 bits
    (llm_convert keeps lm_head unquantized), so their size tells the vocabulary (0 if unknown)."""
    for net in info.nets:
        if net.name == "lm_head" and net.stages and net.stages[0].coeff is not None and hidden:
            return net.stages[0].coeff.size // (hidden * 2)
    return 0


def _llm_json(info: BmodelInfo) -> dict[str, Any] | None:
    try:
        data = discover_layout(net_descs(info), device_num=info.device_num).to_json()
    except LayoutError:
        return None
    if not data["vocab"]:
        data["vocab"] = _vocab_from_lm_head_weights(info, int(data["hidden"]))
        data["vocab_source"] = "lm_head weights"
    return data


def bmodel_info_json(info: BmodelInfo, mem: BmodelMemory) -> dict[str, Any]:
    return {
        "path": info.path,
        "file_size": info.file_size,
        "chip": info.chip,
        "version": f"{info.type}.{info.version}" if info.type else info.version,
        "created": info.time,
        "device_num": info.device_num,
        "kernel_module": {"name": info.kernel_module_name, "size": info.kernel_module_size},
        "nets": [_net_json(n) for n in info.nets],
        "memory": mem.to_json(),
        "llm": _llm_json(info),
    }


def _shape(t: TensorInfo, dynamic: bool) -> str:
    dims = [f"max:{d}" if dynamic else str(d) for d in t.shape]
    return "[" + ", ".join(dims) + "]"


def _mib(n: int) -> str:
    return f"{n:,} B ({n / (1 << 20):.1f} MiB)"


def _render(data: dict[str, Any], info: BmodelInfo, mem: BmodelMemory) -> str:
    lines = [
        f"file:        {data['path']} ({data['file_size']:,} bytes)",
        f"chip:        {data['chip']}   bmodel {data['version']}   devices: {data['device_num']}",
        f"created:     {data['created']}",
        "kernel:      "
        + (
            f"{info.kernel_module_name} ({info.kernel_module_size:,} bytes)"
            if info.kernel_module_size
            else "none embedded"
        ),
    ]
    llm = data["llm"]
    if llm:
        heads = ", ".join(llm["heads"]) or "none"
        lines.append(
            f"LLM layout:  {llm['layers']} layers, seq {llm['seq_len']}, hidden {llm['hidden']}, "
            f"KV {llm['kv_heads']}x{llm['head_dim']}, vocab {llm['vocab']}, {llm['dtype']}"
        )
        lines.append(
            f"             lm_head {llm['lm_head']}; heads: {heads}; prefill "
            f"{'dynamic' if llm['dynamic_prefill'] else 'static'}; KV cache "
            f"{'io_alone (in the nets)' if llm['cache_addr_mode'] == 1 else 'application buffers (addr_mode 0)'}"
        )
    else:
        lines.append("LLM layout:  not an LLM-TPU layout (no embedding/block/lm_head nets)")
    lines.append("")
    for n in info.nets:
        kind = "dynamic" if n.is_dynamic else "static"
        extra = f", addr_mode {n.addr_mode}" if n.addr_mode else ""
        lines.append(f"net {n.index}: {n.name} ({kind}{extra})")
        for si, st in enumerate(n.stages):
            prefix = f"  stage {si}: " if len(n.stages) > 1 else "  "
            for t in st.inputs:
                lines.append(f"{prefix}in  {t.name} {_shape(t, n.is_dynamic)} {t.dtype}")
            for t in st.outputs:
                lines.append(f"{prefix}out {t.name} {_shape(t, False)} {t.dtype}")
    lines += [
        "",
        f"device mem (model_tool): {_mib(mem.device_mem_bytes)}",
        f"  weight {mem.weight_bytes:,}, instruct {mem.instruct_bytes:,}, runtime {mem.runtime_bytes:,}",
        f"not counted by model_tool: io_alone I/O {mem.io_alone_bytes:,}, KV app buffers {mem.kv_app_bytes:,}",
        f"total on device: {_mib(mem.total_bytes)}",
        f"largest single allocation: {_mib(mem.largest_single_allocation)}",
    ]
    return "\n".join(lines)


def print_bmodel_info(path: Path, *, as_json: bool) -> int:
    """Print the bmodel's nets and memory needs; ModelFormatError for anything not a readable bmodel."""
    info = read_bmodel(path)
    mem = bmodel_memory(info)
    data = bmodel_info_json(info, mem)
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_render(data, info, mem))
    return 0
