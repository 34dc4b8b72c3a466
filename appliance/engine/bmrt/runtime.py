"""The bmrt backend: devices, a loaded bmodel, device buffers, launches (over lib.py's ctypes).

It implements the small :class:`~appliance.engine.runner.Backend` interface the shared LLM
orchestration needs: the nets' own I/O buffers, allocation, host<->device and device<->device
copies (byte offsets), and prepared launches whose tensor arrays are built once and re-used every
step (only the shapes of dynamic nets change), so that a decode step costs few Python operations.

Runtime failures become typed errors carrying the vendor's own log lines (captured from fd 2 during
load and allocation): InsufficientTPUMemory (hint: ``llm-tpu provision check``), ModelLoadError,
EngineError.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from ctypes import POINTER, byref, c_char_p, c_void_p
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.bmodel.layout import IoDesc, NetDesc
from appliance.engine.bmrt.lib import DECRYPT_FUNC, BmDeviceMem, BmrtLibs, BmTensor
from appliance.errors import EngineError, InsufficientTPUMemory, ModelLoadError

__all__ = ["BmrtBackend", "DevBuf"]

MEMORY_HINT = "see what the model needs and what the TPU has: llm-tpu provision check"
_NOMEM = re.compile(r"alloc|memory|no ?mem|BM_ERR_NOMEM", re.IGNORECASE)


@dataclass(eq=False)
class DevBuf:
    """A device buffer (or a byte range of one) on device ``dev``."""

    mem: BmDeviceMem
    dev: int = 0
    owned: bool = False

    @property
    def nbytes(self) -> int:
        return int(self.mem.size)


@dataclass(eq=False)
class _Call:
    name: bytes
    dynamic: bool
    inputs: ctypes.Array[BmTensor]
    outputs: ctypes.Array[BmTensor]
    n_in: int
    n_out: int
    default_shapes: list[tuple[int, ...]] = field(default_factory=list)


@contextlib.contextmanager
def capture_stderr() -> Iterator[list[str]]:
    """Collect what C code writes to fds 1 and 2 (the vendor logs to both) into ``lines``."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            _LIBC.fflush(None)  # C stdio buffers (stdout is fully buffered on a pipe) go to the capture
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            lines += tmp.read().decode("utf-8", "replace").splitlines()


def _vendor_tail(lines: list[str], n: int = 4) -> str:
    keep = [ln.strip() for ln in lines if ln.strip()][-n:]
    return (": " + " | ".join(keep)) if keep else ""


# cmodel runtimes are never destroyed while the process runs (see close()); they are destroyed at exit,
# because a process that ends with a live cmodel runtime segfaults in the simulator's teardown.
_CMODEL_PARKED: list[tuple[BmrtLibs, int, list[c_void_p]]] = []
_CMODEL_LIVE: list[BmrtBackend] = []  # strong: a collected backend's runtime must still be destroyed


@atexit.register
def _destroy_cmodel_runtimes() -> None:
    if _CMODEL_LIVE or _CMODEL_PARKED:
        # The simulator says goodbye on stdout, partly from library destructors that run after this
        # handler: the process is ending, so divert its fd 1 for good.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        target = _cmodel_stdout_target()
        os.dup2(target, 1)
        os.close(target)
        _destroy_parked()


def _destroy_parked() -> None:
    while _CMODEL_LIVE:
        backend = _CMODEL_LIVE.pop()
        if backend.runtime:
            backend.close()  # frees its buffers and parks the runtime
    while _CMODEL_PARKED:
        libs, runtime, handles = _CMODEL_PARKED.pop()
        libs.bmrt.bmrt_destroy(runtime)
        for h in handles:
            libs.bmlib.bm_dev_free(h)


_LIBC = ctypes.CDLL(None)
_LIBC.free.argtypes = [c_void_p]
_LIBC.free.restype = None
_LIBC.fflush.argtypes = [c_void_p]


def _cmodel_stdout_target() -> int:
    """Where the simulator's stdout chatter goes: nowhere, or stderr with LLM_TPU_CMODEL_LOG=1."""
    if os.environ.get("LLM_TPU_CMODEL_LOG") == "1":
        return os.dup(2)
    return os.open(os.devnull, os.O_WRONLY)


@contextlib.contextmanager
def cmodel_stdout_diverted() -> Iterator[None]:
    """While the cmodel runs, keep what it prints on stdout off the program's stdout.

    The simulator prints debug lines per launch on stdout, which would corrupt a program's own
    output (``llm-tpu ask --json``) and bury a chat in noise. Its errors go to stderr, which is left
    alone. Costs a few syscalls per launch, on the cmodel only.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved, target = os.dup(1), _cmodel_stdout_target()
    os.dup2(target, 1)
    os.close(target)
    try:
        yield
    finally:
        _LIBC.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _libc_free(ptr: c_void_p) -> None:
    _LIBC.free(ptr)


def _set_shape(t: BmTensor, shape: Sequence[int]) -> None:
    t.shape.num_dims = len(shape)
    for i, d in enumerate(shape):
        t.shape.dims[i] = d


class BmrtBackend:
    """One bmrt runtime over ``devices`` with one bmodel loaded."""

    def __init__(
        self,
        libs: BmrtLibs,
        bmodel: Path,
        *,
        devices: Sequence[int] = (0,),
        decrypt_lib: Path | None = None,
    ) -> None:
        self.libs = libs
        self._bmlib = libs.bmlib
        self._rt = libs.bmrt
        self.handles: list[c_void_p] = []
        self.runtime: int | None = None
        self._owned: list[DevBuf] = []
        self._keep: list[object] = []
        if libs.is_cmodel:
            _CMODEL_LIVE.append(self)
        with capture_stderr() as log:
            try:
                ok = self._open(bmodel, devices, decrypt_lib)
            except BaseException:
                self.close()
                raise
        self.load_log = log
        if not ok:
            self.close()
            said = _vendor_tail(log)
            if _NOMEM.search(" ".join(log)):
                raise InsufficientTPUMemory(
                    f"the TPU has not enough memory for {bmodel}{said}", hint=MEMORY_HINT
                )
            raise ModelLoadError(
                f"the runtime could not load {bmodel}{said}",
                hint="check the file (llm-tpu models info FILE) and that it was compiled for this chip",
            )
        self.nets = self._read_nets()

    # -- loading -----------------------------------------------------------------------------
    def _open(self, bmodel: Path, devices: Sequence[int], decrypt_lib: Path | None) -> bool:
        for dev in devices:
            h = c_void_p()
            status = self._bmlib.bm_dev_request(byref(h), dev)
            if status != 0 or not h.value:
                raise ModelLoadError(
                    f"cannot open TPU device {dev} (bm_dev_request returned {status})",
                    hint="check /dev/bm-sophon* and the driver (llm-tpu status)",
                )
            self.handles.append(h)
        if len(self.handles) == 1:
            self.runtime = self._rt.bmrt_create(self.handles[0])
        else:
            arr = (c_void_p * len(self.handles))(*(h.value for h in self.handles))
            self.runtime = self._rt.bmrt_create_ex(arr, len(self.handles))
        if not self.runtime:
            raise ModelLoadError("bmrt_create failed", hint="check the driver and libsophon versions")
        path = str(bmodel).encode()
        if decrypt_lib is None:
            ok = self._rt.bmrt_load_bmodel(self.runtime, path)
        elif self.libs.has_decrypt_lib:
            ok = self._rt.bmrt_load_bmodel_with_decrypt_lib(self.runtime, path, str(decrypt_lib).encode())
        elif self.libs.has_decrypt:
            fn = ctypes.CDLL(str(decrypt_lib)).decrypt
            cb = ctypes.cast(fn, DECRYPT_FUNC)
            self._keep.append(cb)
            ok = self._rt.bmrt_load_bmodel_with_decrypt(self.runtime, path, cb)
        else:
            raise ModelLoadError(
                f"the runtime in {self.libs.libdir} cannot load encrypted bmodels "
                "(it exports no bmrt_load_bmodel_with_decrypt)",
                hint="upgrade libsophon, or decrypt the bmodel with model_tool --decrypt",
            )
        return bool(ok)

    def _read_nets(self) -> dict[str, NetDesc]:
        rt = self._rt
        n = rt.bmrt_get_network_number(self.runtime)
        names_p = POINTER(c_char_p)()
        rt.bmrt_get_network_names(self.runtime, byref(names_p))
        names = [names_p[i] for i in range(n)]
        _libc_free(ctypes.cast(names_p, c_void_p))
        self._info = {}
        out: dict[str, NetDesc] = {}
        for raw in names:
            info = rt.bmrt_get_network_info(self.runtime, raw).contents
            st = info.stages[0]
            ins = tuple(
                IoDesc(
                    info.input_names[i].decode(),
                    tuple(st.input_shapes[i].dims[: st.input_shapes[i].num_dims]),
                    info.input_dtypes[i],
                )
                for i in range(info.input_num)
            )
            outs = tuple(
                IoDesc(
                    info.output_names[i].decode(),
                    tuple(st.output_shapes[i].dims[: st.output_shapes[i].num_dims]),
                    info.output_dtypes[i],
                )
                for i in range(info.output_num)
            )
            name = raw.decode()
            self._info[name] = info
            out[name] = NetDesc(name, ins, outs, bool(info.is_dynamic), int(info.addr_mode))
        return out

    # -- Backend interface -------------------------------------------------------------------
    def net_io(self, net: str) -> tuple[list[DevBuf], list[DevBuf]]:
        info = self._info[net]
        st = info.stages[0]
        loc_in = info.input_loc_devices
        loc_out = info.output_loc_devices
        ins = [
            DevBuf(BmDeviceMem.from_buffer_copy(st.input_mems[i]), loc_in[i] if loc_in else 0)
            for i in range(info.input_num)
        ]
        outs = [
            DevBuf(BmDeviceMem.from_buffer_copy(st.output_mems[i]), loc_out[i] if loc_out else 0)
            for i in range(info.output_num)
        ]
        return ins, outs

    def alloc(self, nbytes: int, dev: int = 0) -> DevBuf:
        mem = BmDeviceMem()
        with capture_stderr() as log:
            status = self._bmlib.bm_malloc_device_byte(self.handles[dev], byref(mem), nbytes)
        if status != 0:
            raise InsufficientTPUMemory(
                f"cannot allocate {nbytes:,} bytes of TPU memory on device {dev} "
                f"(bm_malloc_device_byte returned {status}){_vendor_tail(log)}",
                hint=MEMORY_HINT,
            )
        buf = DevBuf(mem, dev, owned=True)
        self._owned.append(buf)
        return buf

    def view(self, buf: DevBuf, offset: int, nbytes: int) -> DevBuf:
        mem = BmDeviceMem.from_buffer_copy(buf.mem)
        mem.addr = buf.mem.addr + offset
        mem.size = nbytes
        return DevBuf(mem, buf.dev)

    def upload(self, dst: DevBuf, src: np.ndarray) -> None:
        status = self._bmlib.bm_memcpy_s2d_partial(
            self.handles[dst.dev], dst.mem, src.ctypes.data, src.nbytes
        )
        if status != 0:
            raise EngineError(f"host-to-device copy failed ({status})", hint="restart the service")

    def download(self, src: DevBuf, out: np.ndarray) -> np.ndarray:
        status = self._bmlib.bm_memcpy_d2s_partial(
            self.handles[src.dev], out.ctypes.data, src.mem, out.nbytes
        )
        if status != 0:
            raise EngineError(f"device-to-host copy failed ({status})", hint="restart the service")
        return out

    def copy(self, dst: DevBuf, dst_off: int, src: DevBuf, src_off: int, nbytes: int) -> None:
        if dst.dev != src.dev:  # across chips: through the host
            tmp = np.empty(nbytes, np.uint8)
            self.download(self.view(src, src_off, nbytes), tmp)
            self.upload(self.view(dst, dst_off, nbytes), tmp)
            return
        status = self._bmlib.bm_memcpy_d2d_byte(
            self.handles[dst.dev], dst.mem, dst_off, src.mem, src_off, nbytes
        )
        if status != 0:
            raise EngineError(f"device-to-device copy failed ({status})", hint="restart the service")

    def prepare(self, net: str, inputs: Sequence[DevBuf], outputs: Sequence[DevBuf]) -> _Call:
        info = self._info[net]
        desc = self.nets[net]
        ins = (BmTensor * len(inputs))()
        outs = (BmTensor * len(outputs))()
        for arr, bufs, io in ((ins, inputs, desc.inputs), (outs, outputs, desc.outputs)):
            for i, (buf, d) in enumerate(zip(bufs, io, strict=True)):
                arr[i].dtype = d.dtype
                _set_shape(arr[i], d.shape)
                arr[i].device_mem = buf.mem
                arr[i].st_mode = 0
        return _Call(
            name=info.name,
            dynamic=bool(info.is_dynamic),
            inputs=ins,
            outputs=outs,
            n_in=len(inputs),
            n_out=len(outputs),
            default_shapes=[d.shape for d in desc.inputs],
        )

    def rebind_output(self, call: _Call, index: int, buf: DevBuf) -> None:
        call.outputs[index].device_mem = buf.mem

    def run(self, call: _Call, shapes: Sequence[Sequence[int]] | None = None) -> None:
        if shapes is not None:
            for i, s in enumerate(shapes):
                _set_shape(call.inputs[i], s)
        with cmodel_stdout_diverted() if self.libs.is_cmodel else contextlib.nullcontext():
            ok = self._rt.bmrt_launch_tensor_ex(
                self.runtime, call.name, call.inputs, call.n_in, call.outputs, call.n_out, True, False
            )
            statuses = [self._bmlib.bm_thread_sync(h) for h in self.handles] if ok else []
        if not ok:
            raise EngineError(
                f"bmrt_launch_tensor_ex failed on net {call.name.decode()}",
                hint="the runtime's log above says why; restart the service (llm-tpu status)",
            )
        for status in statuses:
            if status != 0:
                raise EngineError(
                    f"the TPU did not finish net {call.name.decode()} (bm_thread_sync returned {status})",
                    hint="the chip may need a reboot; check llm-tpu status",
                )

    def output_shape(self, call: _Call, index: int) -> tuple[int, ...]:
        s = call.outputs[index].shape
        return tuple(s.dims[: s.num_dims])

    def close(self) -> None:
        for buf in self._owned:
            self._bmlib.bm_free_device(self.handles[buf.dev], buf.mem)
        self._owned.clear()
        if self.libs.is_cmodel and self.runtime:
            # Observed on the cmodel (tpu-mlir 1.30.2): after bmrt_destroy, decode steps of runtimes
            # created later in the process return garbage. A simulator leaks little; park it instead.
            _CMODEL_PARKED.append((self.libs, self.runtime, list(self.handles)))
            self.runtime = None
        if self.runtime:
            self._rt.bmrt_destroy(self.runtime)
            self.runtime = None
        for h in self.handles if not self.libs.is_cmodel else ():
            self._bmlib.bm_dev_free(h)
        self.handles.clear()
