"""How much TPU memory a bmodel needs: the ``model_tool --info`` figures plus what they leave out.

``model_tool --info`` prints ``device mem size: X (weight: W, instruct: I, runtime: R)``:

- W: the weight blobs, each distinct blob (by its sha256 check code) counted once, because the
  runtime loads shared weights once (``block_i`` and ``block_cache_i`` share theirs);
- I: command bytes of static subnets plus 4 bytes per word of dynamic IR, over every net;
- R: neuron memory, which nets share: the largest ``ctx_size`` of single-subnet nets, plus the
  largest ``ctx_size`` of the *last* net when that net has several subnets. That quirk is the
  vendor's (the per-net sum is reset on every net), reproduced so that our figure equals the tool's
  on every fixture. tpu-mlir 1.30.2's tool prints no middle buffer for BM1684X bmodels.

Not counted by the tool, but allocated when the model runs:

- ``io_alone_bytes``: nets with addr_mode 1 (io_alone) own their I/O memory (``io_size``); for
  ``block_cache_i`` that is where the KV cache lives;
- ``kv_app_bytes``: with addr_mode 0 the engine allocates the KV cache itself (history_k and
  history_v of every ``block_cache_i``).

``largest_single_allocation`` matters because one allocation must fit into one ION heap
(sophgo-facts.md section 7). It is conservative: the weights count as one block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.bmodel.reader import BmodelInfo, NetInfo, read_bmodel

__all__ = ["BmodelMemory", "bmodel_memory", "read_bmodel_memory"]


@dataclass(frozen=True)
class BmodelMemory:
    """Device memory figures of one bmodel, in bytes. Stable API (provisioning imports it)."""

    weight_bytes: int
    instruct_bytes: int
    runtime_bytes: int
    io_alone_bytes: int
    kv_app_bytes: int
    largest_single_allocation: int
    host_runtime_bytes: int = 0

    @property
    def device_mem_bytes(self) -> int:
        """The ``device mem size`` that ``model_tool --info`` prints."""
        return self.weight_bytes + self.instruct_bytes + self.runtime_bytes

    @property
    def total_bytes(self) -> int:
        """What loading and running the model allocates on the device (before any margin)."""
        return self.device_mem_bytes + self.io_alone_bytes + self.kv_app_bytes

    def to_json(self) -> dict[str, int]:
        out = asdict(self)
        out["device_mem_bytes"] = self.device_mem_bytes
        out["total_bytes"] = self.total_bytes
        return out


def _is_block_cache(net: NetInfo) -> bool:
    return net.name.startswith("block_cache_") or net.name.startswith("block_unshare_")


def _kv_inputs_bytes(net: NetInfo) -> int:
    if not net.stages:
        return 0
    # history_k / history_v (3rd and 4th input per device); named lookup first, then positions
    st = net.stages[0]
    named = [t.nbytes for t in st.inputs if t.name.startswith(("history_k", "history_v", "past_k", "past_v"))]
    if named:
        return sum(named)
    return sum(t.nbytes for i, t in enumerate(st.inputs) if i % 5 in (3, 4))


def bmodel_memory(info: BmodelInfo) -> BmodelMemory:
    seen_codes: set[bytes] = set()
    weight = instruct = host_runtime = 0
    best_single = 0  # largest ctx_size among single-subnet nets
    last_multi = 0
    io_alone = kv_app = largest_io = 0
    for net in info.nets:
        net_max = max((st.ctx_size for st in net.stages), default=0)
        multi = any(len(st.subnets) > 1 for st in net.stages)
        for st in net.stages:
            if st.coeff is not None and st.coeff.check_code not in seen_codes:
                seen_codes.add(st.coeff.check_code)
                weight += st.coeff.size
            for sub in st.subnets:
                if sub.mode == 0:
                    instruct += sub.ir_len * 4 if sub.is_dynamic else sub.cmd_bytes
            host_runtime += st.cpu_mem_size * 4
        if multi:
            last_multi = net_max
        else:
            best_single = max(best_single, net_max)
            last_multi = 0
        if net.addr_mode == 1:
            net_io = max((st.io_size for st in net.stages), default=0)
            io_alone += net_io
            largest_io = max(largest_io, net_io)
        elif _is_block_cache(net):
            kv = _kv_inputs_bytes(net)
            kv_app += kv
            largest_io = max(largest_io, kv // 2)
    runtime = best_single + last_multi
    return BmodelMemory(
        weight_bytes=weight,
        instruct_bytes=instruct,
        runtime_bytes=runtime,
        io_alone_bytes=io_alone,
        kv_app_bytes=kv_app,
        largest_single_allocation=max(weight, runtime, instruct, largest_io),
        host_runtime_bytes=host_runtime,
    )


def read_bmodel_memory(path: Path | str) -> BmodelMemory:
    """Memory figures of the bmodel at ``path`` (raises ModelFormatError for non-bmodels)."""
    return bmodel_memory(read_bmodel(path))
