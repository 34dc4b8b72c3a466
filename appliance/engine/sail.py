"""The sail engine: the same LLM orchestration as bmrt, over ``sophon.sail.EngineLLM``.

Only the public sail >= 3.9 API is supported: ``EngineLLM(path, [dev, ...])`` with tensors keyed by
integer index. The older generations (``Engine`` keyed by name, the closed 3.8.0 wheel keyed by
``(name, dev)``) are refused with a message naming the installed version (sophgo-facts.md 4).

Sail semantics this backend relies on: ``get_input_tensors_addrmode0`` / ``..._output_...`` give
the nets' own device tensors in any addr_mode; ``Tensor(src, shape, offset)`` is a view at an
*element* offset; ``sync_d2d(src, src_off, dst_off, n)`` counts elements; ``update_data`` checks
shape and dtype, so f16/bf16 data travels as uint16 views; ``Tensor(handle, shape, dtype, False,
True)`` is device-only memory; ``process`` is synchronous.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.bmodel.layout import DTYPE_F32, DTYPE_I32, IoDesc, LayoutError, NetDesc, discover_layout
from appliance.bmodel.reader import read_bmodel
from appliance.engine.options import check_device_count
from appliance.engine.protocol import EngineInfo
from appliance.engine.runner import SUFFIX_DECODE_MAX, LlmRunner, layout_details
from appliance.errors import EngineUnavailable, InsufficientTPUMemory, ModelLoadError

__all__ = ["MIN_SAIL", "SailBackend", "SailEngine", "import_sail"]

MIN_SAIL = (3, 9)
_ESIZE = {DTYPE_F32: 4, DTYPE_I32: 4, 7: 4, 2: 1, 3: 1}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def import_sail() -> Any:
    """``sophon.sail`` if it is a version with integer-keyed EngineLLM, else EngineUnavailable."""
    try:
        sail = importlib.import_module("sophon.sail")
    except ImportError as exc:
        raise EngineUnavailable(
            f"sophon.sail is not importable ({exc})",
            hint="install the vendor's sophon-sail wheel (>= 3.9) on the device, or use --engine bmrt",
        ) from None
    version = str(getattr(sail, "__version__", "") or "unknown")
    if not hasattr(sail, "EngineLLM") or _version_tuple(version) < MIN_SAIL:
        raise EngineUnavailable(
            f"sophon.sail {version} is too old: the sail engine needs EngineLLM with integer tensor "
            f"keys (sail >= {MIN_SAIL[0]}.{MIN_SAIL[1]})",
            hint="upgrade sophon-sail, or use --engine bmrt (libsophon only)",
        )
    return sail


class _SailCall:
    __slots__ = ("ins", "name", "outs")

    def __init__(self, name: str, ins: dict[int, Any], outs: dict[int, Any]) -> None:
        self.name, self.ins, self.outs = name, ins, outs


class SailBackend:
    """The orchestration's Backend over one EngineLLM."""

    def __init__(self, sail: Any, bmodel: Path, devices: Sequence[int]) -> None:
        self.sail = sail
        self.devices = list(devices)
        try:
            self.engine = sail.EngineLLM(str(bmodel), self.devices)
        except Exception as exc:  # sail raises RuntimeError/SailEngineError with the vendor text
            text = str(exc)
            if "alloc" in text.lower() or "memory" in text.lower():
                raise InsufficientTPUMemory(
                    f"sail could not allocate the model's TPU memory: {text}",
                    hint="see what the model needs and what the TPU has: llm-tpu provision check",
                ) from None
            raise ModelLoadError(f"sail could not load {bmodel}: {text}") from None
        self._handles = {d: sail.Handle(d) for d in self.devices}
        self.nets = self._read_nets()
        self.kv_dtype: Any = None

    def _read_nets(self) -> dict[str, NetDesc]:
        e = self.engine
        out = {}
        for name in e.get_graph_names():
            ins = tuple(
                IoDesc(n, tuple(e.get_input_shape(name, i)), int(e.get_input_dtype(name, i)))
                for i, n in enumerate(e.get_input_names(name))
            )
            outs = tuple(
                IoDesc(n, tuple(e.get_output_shape(name, i)), int(e.get_output_dtype(name, i)))
                for i, n in enumerate(e.get_output_names(name))
            )
            out[name] = NetDesc(name, ins, outs, bool(e.get_is_dynamic(name)), int(e.get_addr_mode(name)))
        return out

    def net_io(self, net: str) -> tuple[list[Any], list[Any]]:
        ins = self.engine.get_input_tensors_addrmode0(net)
        outs = self.engine.get_output_tensors_addrmode0(net)
        return [ins[i] for i in range(len(ins))], [outs[i] for i in range(len(outs))]

    def alloc(self, nbytes: int, dev: int = 0) -> Any:
        dtype = self.kv_dtype if self.kv_dtype is not None else self.sail.Dtype.BM_UINT16
        return self.sail.Tensor(self._handles[self.devices[dev]], [nbytes // 2], dtype, False, True)

    @staticmethod
    def _esize(t: Any) -> int:
        return _ESIZE.get(int(t.dtype()), 2)

    def upload(self, dst: Any, src: np.ndarray) -> None:
        shape = list(dst.shape())
        n = int(np.prod(shape))
        flat = src.reshape(-1)
        if flat.size != n:
            dst = self.sail.Tensor(dst, [flat.size], 0)
            shape = [flat.size]
        dst.update_data(flat.reshape(shape))

    def download(self, src: Any, out: np.ndarray) -> np.ndarray:
        n = out.size
        view = self.sail.Tensor(src, [n], 0) if int(np.prod(src.shape())) != n else src
        view.sync_d2s()
        out[...] = np.asarray(view.asnumpy()).reshape(-1)[:n].view(out.dtype)
        return out

    def copy(self, dst: Any, dst_off: int, src: Any, src_off: int, nbytes: int) -> None:
        es = self._esize(dst)
        dst.sync_d2d(src, src_off // es, dst_off // es, nbytes // es)

    def view(self, buf: Any, offset: int, nbytes: int) -> Any:
        es = self._esize(buf)
        return self.sail.Tensor(buf, [nbytes // es], offset // es)

    def rebind_output(self, call: _SailCall, index: int, buf: Any) -> None:
        call.outs[index] = buf

    def prepare(self, net: str, inputs: Sequence[Any], outputs: Sequence[Any]) -> _SailCall:
        return _SailCall(net, dict(enumerate(inputs)), dict(enumerate(outputs)))

    def run(self, call: _SailCall, shapes: Sequence[Sequence[int]] | None = None) -> None:
        ins = call.ins
        if shapes is not None:  # dynamic nets read the real shapes from view tensors
            ins = {
                i: self.sail.Tensor(t, list(shapes[i]), 0) if i < len(shapes) else t for i, t in ins.items()
            }
        self.engine.process(call.name, ins, call.outs)

    def close(self) -> None:
        self.engine = None
        self._handles.clear()


class SailEngine(LlmRunner):
    """Engine protocol over sophon.sail.EngineLLM (sail >= 3.9)."""

    @classmethod
    def open(
        cls,
        bmodel: Path | str,
        *,
        devices: Sequence[int] | None = None,
        decrypt_lib: str | Path | None = None,
        suffix_decode_max: int = SUFFIX_DECODE_MAX,
        vocab_size: int | None = None,
        sail: Any = None,
    ) -> SailEngine:
        sail = sail if sail is not None else import_sail()
        bmodel = Path(bmodel)
        if decrypt_lib:
            raise EngineUnavailable(
                "the sail engine cannot load encrypted bmodels", hint="use --engine bmrt with decrypt_lib"
            )
        info = read_bmodel(bmodel)
        devs = check_device_count(bmodel.name, info.device_num, devices)
        backend = SailBackend(sail, bmodel, devs)
        try:
            layout = discover_layout(list(backend.nets.values()), device_num=info.device_num)
        except LayoutError as exc:
            backend.close()
            raise ModelLoadError(f"{bmodel.name} is not a bmodel this engine can run: {exc}") from None
        backend.kv_dtype = sail.Dtype(layout.act_dtype) if hasattr(sail, "Dtype") else None
        details = {"sail": str(getattr(sail, "__version__", "unknown"))} | layout_details(layout)
        return cls(
            backend,
            layout,
            EngineInfo(kind="sail", model_path=str(bmodel), details=details),
            suffix_decode_max=suffix_decode_max,
            vocab_size=vocab_size,
        )
