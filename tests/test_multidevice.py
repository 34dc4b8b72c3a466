"""Multi-device (PCIe cards, bmodels for N devices): layout and per-device I/O on synthetic nets.

No N-device bmodel exists here, so the orchestration runs on a recording backend: buffers are
names like ``block_cache_1.in7`` and the test checks which buffer each launch and copy uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from appliance.bmodel.layout import (
    DTYPE_BF16,
    DTYPE_F32,
    DTYPE_I32,
    IoDesc,
    LayoutError,
    NetDesc,
    discover_layout,
    io_index,
)
from appliance.engine.protocol import EngineInfo
from appliance.engine.runner import LlmRunner

SEQ, H, KV, HD, V, LAYERS = 16, 8, 2, 4, 32, 2


def io(name: str, shape: tuple[int, ...], dtype: int = DTYPE_BF16) -> IoDesc:
    return IoDesc(name, shape, dtype)


def nets(devices: int, *, addr_mode: int = 1) -> list[NetDesc]:
    out = [
        NetDesc("embedding", (io("input_ids", (1, SEQ), DTYPE_I32),), (io("emb", (1, SEQ, H)),) * devices),
        NetDesc("embedding_cache", (io("input_ids", (1, 1), DTYPE_I32),), (io("emb", (1, 1, H)),) * devices),
        NetDesc("lm_head", (io("hidden", (1, H)),), (io("logits", (1, V), DTYPE_F32),)),
    ]
    for i in range(LAYERS):
        blk_in = (io("x", (1, SEQ, H)), io("pos", (1, SEQ), DTYPE_I32), io("mask", (1, 1, SEQ, SEQ)))
        blk_out = (io("y", (1, SEQ, H)), io("k", (1, SEQ, KV, HD)), io("v", (1, SEQ, KV, HD)))
        cache_in = (
            io("x", (1, 1, H)),
            io("pos", (1, 1), DTYPE_I32),
            io("mask", (1, 1, 1, SEQ + 1)),
            io("history_k", (1, SEQ, KV, HD)),
            io("history_v", (1, SEQ, KV, HD)),
        )
        cache_out = (io("y", (1, 1, H)), io("k", (1, 1, KV, HD)), io("v", (1, 1, KV, HD)))
        out.append(NetDesc(f"block_{i}", blk_in * devices, blk_out * devices))
        out.append(NetDesc(f"block_cache_{i}", cache_in * devices, cache_out * devices, addr_mode=addr_mode))
    return out


class RecordingBackend:
    def __init__(self, descs: list[NetDesc]) -> None:
        self.nets = {n.name: n for n in descs}
        self.log: list[tuple[Any, ...]] = []
        self.calls: dict[str, tuple[list[str], list[str]]] = {}
        self.n_alloc = 0

    def net_io(self, net: str) -> tuple[list[str], list[str]]:
        d = self.nets[net]
        return [f"{net}.in{i}" for i in range(len(d.inputs))], [
            f"{net}.out{i}" for i in range(len(d.outputs))
        ]

    def alloc(self, nbytes: int, dev: int = 0) -> str:
        self.n_alloc += 1
        return f"kv{self.n_alloc}@dev{dev}"

    def upload(self, dst: str, src: np.ndarray) -> None:
        self.log.append(("upload", dst, src.size))

    def download(self, src: str, out: np.ndarray) -> np.ndarray:
        out[...] = 0
        return out

    def copy(self, dst: str, dst_off: int, src: str, src_off: int, nbytes: int) -> None:
        self.log.append(("copy", dst, dst_off, src, src_off, nbytes))

    def view(self, buf: str, offset: int, nbytes: int) -> str:
        return f"{buf}[{offset}:{offset + nbytes}]"

    def prepare(self, net: str, inputs: Sequence[str], outputs: Sequence[str]) -> str:
        self.calls.setdefault(net, (list(inputs), list(outputs)))
        return net

    def rebind_output(self, call: str, index: int, buf: str) -> None:
        self.log.append(("rebind", call, index, buf))

    def run(self, call: str, shapes: Sequence[Sequence[int]] | None = None) -> None:
        self.log.append(("run", call))

    def close(self) -> None:
        pass


def test_io_index_is_device_major() -> None:
    assert [io_index(s, d, 5) for d in range(2) for s in range(5)] == list(range(10))
    assert io_index(1, 3, 3) == 10


def test_layout_counts_devices_and_checks_io() -> None:
    lay = discover_layout(nets(2), device_num=2)
    assert (lay.devices, lay.layers, lay.seq_len, lay.kv_heads, lay.head_dim, lay.vocab) == (
        2,
        LAYERS,
        SEQ,
        KV,
        HD,
        V,
    )
    with pytest.raises(LayoutError, match="per device"):
        discover_layout(nets(2), device_num=1)
    with pytest.raises(LayoutError, match="per device"):
        discover_layout(nets(1), device_num=2)


@pytest.mark.parametrize("addr_mode", [1, 0])
def test_two_device_decode_and_prefill_use_each_devices_io(addr_mode: int) -> None:
    lay = discover_layout(nets(2, addr_mode=addr_mode), device_num=2)
    b = RecordingBackend(nets(2, addr_mode=addr_mode))
    run = LlmRunner(b, lay, EngineInfo(kind="test", model_path="synthetic"))
    ins, outs = b.calls["block_cache_1"]
    assert len(ins) == 10 and outs == [f"block_cache_1.out{i}" for i in range(6)]
    # device d: previous layer's output of device d, layer 0's position and mask of device d, KV of d
    assert ins[1:3] == ["block_cache_0.in1", "block_cache_0.in2"]
    assert ins[6:8] == ["block_cache_0.in6", "block_cache_0.in7"]
    if addr_mode == 1:
        assert ins[3:5] == ["block_cache_1.in3", "block_cache_1.in4"] and ins[8:10] == [
            "block_cache_1.in8",
            "block_cache_1.in9",
        ]
        assert b.n_alloc == 0
    else:
        assert all(x.endswith("@dev0") for x in ins[3:5]) and all(x.endswith("@dev1") for x in ins[8:10])
        assert b.n_alloc == 2 * 2 * LAYERS
    run.prefill([1, 2, 3])
    b.log.clear()
    run.decode(4)
    uploads = {x[1] for x in b.log if x[0] == "upload"}
    assert {"block_cache_0.in1", "block_cache_0.in6", "block_cache_0.in2", "block_cache_0.in7"} <= uploads
    assert not [x for x in b.log if x[0] == "copy"]  # decode moves nothing through copies
    row = KV * HD * 2
    # the net writes the new K row of device 1, layer 1 straight into row 3 of device 1's cache
    assert ("rebind", "block_cache_1", 4, f"{ins[8]}[{3 * row}:{4 * row}]") in b.log
    # each device's hidden state feeds its own next layer; the embedding of device d feeds device d
    assert ins[0] == "block_cache_0.out0" and ins[5] == "block_cache_0.out3"
    assert b.calls["block_cache_0"][0][5] == "embedding_cache.out1"
    assert [x[1] for x in b.log if x[0] == "run"] == [
        "embedding_cache",
        "block_cache_0",
        "block_cache_1",
        "lm_head",
    ]
