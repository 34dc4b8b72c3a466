"""A FAKE ``sophon.sail`` at the sail-wheel boundary (the vendor wheel exists only on the device).

It follows sophgo-facts.md section 4 and the public sail >= 3.9 EngineLLM interface: tensors keyed
by integer index, ``Tensor(src, shape, offset)`` views at an *element* offset, ``update_data`` that
checks shape and dtype (f16/bf16 only as uint16), ``sync_d2d(src, src_off, dst_off, n)`` in
elements, ``Tensor(handle, shape, dtype, False, True)`` device-only memory, a synchronous
``process``. Its computation is real: every ``process`` runs the net on the bmrt engine's ctypes
bindings over the BM1684X cmodel, so the sail code path produces real tokens in tests.
``make_fake_sail(version)`` builds a module; pass ``version="3.8.0"`` to play an old wheel.
"""

from __future__ import annotations

import enum
import types
from pathlib import Path
from typing import Any

import numpy as np

from appliance.engine.bmrt.lib import find_libdir, load_libs
from appliance.engine.bmrt.runtime import BmrtBackend, DevBuf

_NP = {
    0: np.float32,
    1: np.uint16,
    2: np.int8,
    3: np.uint8,
    5: np.uint16,
    6: np.int32,
    7: np.uint32,
    8: np.uint16,
}


class Dtype(enum.IntEnum):
    BM_FLOAT32 = 0
    BM_FLOAT16 = 1
    BM_INT8 = 2
    BM_UINT8 = 3
    BM_INT16 = 4
    BM_UINT16 = 5
    BM_INT32 = 6
    BM_UINT32 = 7
    BM_BFLOAT16 = 8


class Handle:
    def __init__(self, dev: int) -> None:
        self.dev = dev


class Tensor:
    """Device tensor: a DevBuf plus shape, dtype and an element offset into it."""

    _backend: BmrtBackend | None = None  # set by EngineLLM (one emulated device set per test)

    def __init__(self, *args: Any) -> None:
        if isinstance(args[0], Tensor):  # view: Tensor(src, shape, offset)
            src, shape, offset = args
            self.buf, self._dtype = src.buf, src._dtype
            self.offset = src.offset + int(offset)
            self._shape = [int(d) for d in shape]
            if self.offset + self.size > src.offset + src.capacity:
                raise RuntimeError("view exceeds its source tensor")
            self.capacity = self.size
        elif isinstance(args[0], Handle):  # Tensor(handle, shape, dtype, own_sys, own_dev)
            handle, shape, dtype, own_sys, own_dev = args
            assert not own_sys and own_dev, "the appliance only creates device-only tensors"
            self._shape, self._dtype = [int(d) for d in shape], Dtype(dtype)
            assert Tensor._backend is not None
            self.buf = Tensor._backend.alloc(self.size * self.esize, handle.dev)
            self.offset = 0
            self.capacity = self.size
        else:
            raise TypeError("unsupported Tensor constructor")

    @classmethod
    def _wrap(cls, buf: DevBuf, shape: tuple[int, ...], dtype: int) -> Tensor:
        t = cls.__new__(cls)
        t.buf, t._shape, t._dtype, t.offset = buf, list(shape), Dtype(dtype), 0
        t.capacity = t.size
        return t

    @property
    def size(self) -> int:
        return int(np.prod(self._shape)) if self._shape else 1

    @property
    def esize(self) -> int:
        return np.dtype(_NP[int(self._dtype)]).itemsize

    def shape(self) -> list[int]:
        return list(self._shape)

    def dtype(self) -> Dtype:
        return self._dtype

    def _mem(self) -> DevBuf:
        assert Tensor._backend is not None
        return Tensor._backend.view(self.buf, self.offset * self.esize, self.size * self.esize)

    def update_data(self, data: np.ndarray) -> None:
        if list(data.shape) != self._shape:
            raise RuntimeError(f"update_data: shape {list(data.shape)} != tensor shape {self._shape}")
        if data.dtype != _NP[int(self._dtype)]:
            raise RuntimeError(f"update_data: dtype {data.dtype} does not match {self._dtype.name}")
        assert Tensor._backend is not None
        Tensor._backend.upload(self._mem(), np.ascontiguousarray(data))

    def sync_d2s(self) -> None:
        assert Tensor._backend is not None
        self._host = Tensor._backend.download(self._mem(), np.empty(self._shape, _NP[int(self._dtype)]))

    def asnumpy(self) -> np.ndarray:
        return self._host.copy()

    def sync_d2d(self, src: Tensor, src_off: int, dst_off: int, n: int) -> None:
        if src.esize != self.esize:
            raise RuntimeError("sync_d2d between tensors of different element sizes")
        if src_off + n > src.capacity or dst_off + n > self.capacity:
            raise RuntimeError("sync_d2d out of range")
        assert Tensor._backend is not None
        es = self.esize
        Tensor._backend.copy(
            self.buf, (self.offset + dst_off) * es, src.buf, (src.offset + src_off) * es, n * es
        )


class EngineLLM:
    def __init__(self, bmodel_path: str, dev_ids: list[int]) -> None:
        libs = load_libs(find_libdir(_LIBDIR[0]))
        self._b = BmrtBackend(libs, Path(bmodel_path), devices=dev_ids)
        Tensor._backend = self._b
        self._io: dict[str, tuple[dict[int, Tensor], dict[int, Tensor]]] = {}
        for name, desc in self._b.nets.items():
            ins, outs = self._b.net_io(name)
            self._io[name] = (
                {
                    i: Tensor._wrap(b, d.shape, d.dtype)
                    for i, (b, d) in enumerate(zip(ins, desc.inputs, strict=True))
                },
                {
                    i: Tensor._wrap(b, d.shape, d.dtype)
                    for i, (b, d) in enumerate(zip(outs, desc.outputs, strict=True))
                },
            )
        self.process_calls = 0

    def get_graph_names(self) -> list[str]:
        return list(self._b.nets)

    def get_addr_mode(self, g: str) -> int:
        return self._b.nets[g].addr_mode

    def get_is_dynamic(self, g: str) -> bool:
        return self._b.nets[g].is_dynamic

    def get_input_names(self, g: str) -> list[str]:
        return [d.name for d in self._b.nets[g].inputs]

    def get_output_names(self, g: str) -> list[str]:
        return [d.name for d in self._b.nets[g].outputs]

    def get_input_shape(self, g: str, i: int, stage: int = 0) -> list[int]:
        return list(self._b.nets[g].inputs[i].shape)

    def get_output_shape(self, g: str, i: int, stage: int = 0) -> list[int]:
        return list(self._b.nets[g].outputs[i].shape)

    def get_input_dtype(self, g: str, i: int) -> Dtype:
        return Dtype(self._b.nets[g].inputs[i].dtype)

    def get_output_dtype(self, g: str, i: int) -> Dtype:
        return Dtype(self._b.nets[g].outputs[i].dtype)

    def get_input_tensors_addrmode0(self, g: str, stage: int = 0) -> dict[int, Tensor]:
        return dict(self._io[g][0])

    def get_output_tensors_addrmode0(self, g: str, stage: int = 0) -> dict[int, Tensor]:
        return dict(self._io[g][1])

    def process(self, g: str, inputs: dict[int, Tensor], outputs: dict[int, Tensor]) -> None:
        if any(not isinstance(k, int) for k in [*inputs, *outputs]):
            raise TypeError("EngineLLM (sail >= 3.9) keys tensors by integer index")
        ins = [inputs[i] for i in range(len(inputs))]
        outs = [outputs[i] for i in range(len(outputs))]
        call = self._b.prepare(g, [t._mem() for t in ins], [t._mem() for t in outs])
        self._b.run(call, [t._shape for t in ins])
        self.process_calls += 1

    def close(self) -> None:
        self._b.close()


_LIBDIR: list[Path | None] = [None]


def make_fake_sail(libdir: Path, version: str = "3.9.0") -> types.ModuleType:
    """A ``sophon.sail`` module object; install it in sys.modules['sophon.sail'] to use it."""
    _LIBDIR[0] = libdir
    mod = types.ModuleType("sophon.sail")
    mod.__version__ = version  # type: ignore[attr-defined]
    mod.Dtype = Dtype  # type: ignore[attr-defined]
    mod.Handle = Handle  # type: ignore[attr-defined]
    mod.Tensor = Tensor  # type: ignore[attr-defined]
    if version >= "3.9":
        mod.EngineLLM = EngineLLM  # type: ignore[attr-defined]
    return mod
