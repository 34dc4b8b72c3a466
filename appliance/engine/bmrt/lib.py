"""ctypes bindings for libbmlib + libbmrt, and where to find them.

Search order for the library directory: the ``libdir`` option (config ``engine.bmrt.libdir``), the
environment variable ``LLM_TPU_BMRT_LIBDIR``, libsophon on a device
(``/opt/sophon/libsophon-current/lib``), and, only when asked for (``allow_cmodel``), the x86 cmodel
runtime that scripts/fetch-vendor-runtime.sh extracts (``LLM_TPU_VENDOR_DIR`` or
``<repo>/.cache/vendor/tpu-mlir-1.30.2/lib``).

The cmodel's libbmlib ``dlopen()``s ``libcmodel.so`` by bare name. Its RUNPATH is ``$ORIGIN/``, so
the lookup succeeds without LD_LIBRARY_PATH whenever ``libcmodel.so`` sits next to libbmlib (the
fetch script puts it there); a directory without that file is reported, not half-loaded.

Struct layouts follow the public headers (bmlib_runtime.h, bmruntime_interface.h, bmdef.h).
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_float,
    c_int,
    c_int32,
    c_size_t,
    c_uint,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import EngineUnavailable

__all__ = [
    "DECRYPT_FUNC",
    "DEVICE_LIBDIR",
    "BmDeviceMem",
    "BmNetInfo",
    "BmShape",
    "BmTensor",
    "BmrtLibs",
    "find_libdir",
    "load_libs",
]

DEVICE_LIBDIR = Path("/opt/sophon/libsophon-current/lib")
VENDOR_VERSION_DIR = "tpu-mlir-1.30.2"
BM_MAX_DIMS = 8


class BmDeviceMem(Structure):
    """bm_device_mem_t: 24 bytes (address union of 16, flags, size)."""

    _fields_ = (
        ("addr", c_uint64),
        ("reserved", c_uint32),
        ("dmabuf_fd", c_int32),
        ("flags", c_uint32),
        ("size", c_uint32),
    )


class BmShape(Structure):
    _fields_ = (("num_dims", c_int), ("dims", c_int * BM_MAX_DIMS))


class BmTensor(Structure):
    """bm_tensor_t: 72 bytes."""

    _fields_ = (("dtype", c_int), ("shape", BmShape), ("device_mem", BmDeviceMem), ("st_mode", c_int))


class BmStageInfo(Structure):
    _fields_ = (
        ("input_shapes", POINTER(BmShape)),
        ("output_shapes", POINTER(BmShape)),
        ("input_mems", POINTER(BmDeviceMem)),
        ("output_mems", POINTER(BmDeviceMem)),
    )


class BmNetInfo(Structure):
    _fields_ = (
        ("name", c_char_p),
        ("is_dynamic", c_bool),
        ("input_num", c_int),
        ("input_names", POINTER(c_char_p)),
        ("input_dtypes", POINTER(c_int)),
        ("input_scales", POINTER(c_float)),
        ("output_num", c_int),
        ("output_names", POINTER(c_char_p)),
        ("output_dtypes", POINTER(c_int)),
        ("output_scales", POINTER(c_float)),
        ("stage_num", c_int),
        ("stages", POINTER(BmStageInfo)),
        ("max_input_bytes", POINTER(c_size_t)),
        ("max_output_bytes", POINTER(c_size_t)),
        ("input_zero_point", POINTER(c_int)),
        ("output_zero_point", POINTER(c_int)),
        ("input_loc_devices", POINTER(c_int)),
        ("output_loc_devices", POINTER(c_int)),
        ("core_num", c_int),
        ("addr_mode", c_int32),
    )


assert ctypes.sizeof(BmDeviceMem) == 24 and ctypes.sizeof(BmTensor) == 72

# uint8_t *decrypt(const uint8_t *in, uint64_t n, uint64_t *out_n): result malloc'ed, runtime frees
DECRYPT_FUNC = ctypes.CFUNCTYPE(c_void_p, POINTER(c_uint8), c_uint64, POINTER(c_uint64))


def _vendor_libdirs() -> list[Path]:
    env = os.environ.get("LLM_TPU_VENDOR_DIR")
    repo = Path(__file__).resolve().parents[3]
    bases = [Path(env), Path(env) / VENDOR_VERSION_DIR] if env else []
    bases.append(repo / ".cache" / "vendor" / VENDOR_VERSION_DIR)
    return [b / "lib" for b in bases]


def _has_runtime(d: Path) -> bool:
    return (d / "libbmrt.so.1.0").exists() or (d / "libbmrt.so").exists()


def find_libdir(libdir: str | Path | None = None, *, allow_cmodel: bool = False) -> Path:
    """The first directory holding libbmrt/libbmlib, or EngineUnavailable saying where we looked."""
    candidates: list[Path] = []
    if libdir:
        candidates.append(Path(libdir))
    env = os.environ.get("LLM_TPU_BMRT_LIBDIR")
    if env:
        candidates.append(Path(env))
    explicit = len(candidates)
    candidates.append(DEVICE_LIBDIR)
    if allow_cmodel:
        candidates += _vendor_libdirs()
    for i, d in enumerate(candidates):
        if _has_runtime(d):
            return d
        if i < explicit:
            raise EngineUnavailable(
                f"{d} holds no libbmrt.so(.1.0)",
                hint="point engine.bmrt.libdir / LLM_TPU_BMRT_LIBDIR at libsophon's lib directory "
                "or at the cmodel runtime (scripts/fetch-vendor-runtime.sh)",
            )
    raise EngineUnavailable(
        "no bmrt runtime found (looked in " + ", ".join(str(c) for c in candidates) + ")",
        hint="install libsophon on the device, or run on the x86 cmodel: scripts/fetch-vendor-runtime.sh "
        "and LLM_TPU_BMRT_LIBDIR=.cache/vendor/tpu-mlir-1.30.2/lib",
    )


def _first(d: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (d / n).exists():
            return d / n
    raise EngineUnavailable(f"{d} has none of {', '.join(names)}")


@dataclass(frozen=True)
class BmrtLibs:
    libdir: Path
    bmlib: ctypes.CDLL
    bmrt: ctypes.CDLL
    is_cmodel: bool

    @property
    def has_decrypt(self) -> bool:
        return hasattr(self.bmrt, "bmrt_load_bmodel_with_decrypt")

    @property
    def has_decrypt_lib(self) -> bool:
        return hasattr(self.bmrt, "bmrt_load_bmodel_with_decrypt_lib")


def _sig(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> None:
    fn = getattr(lib, name, None)
    if fn is not None:
        fn.restype = restype
        fn.argtypes = list(argtypes)


_LOADED: dict[Path, BmrtLibs] = {}


def load_libs(libdir: Path) -> BmrtLibs:
    """Load (once per process) and type the two libraries of ``libdir``."""
    libdir = libdir.resolve()
    if libdir in _LOADED:
        return _LOADED[libdir]
    is_cmodel = (libdir / "libcmodel.so").exists() or (libdir / "libcmodel_bm1684x.so").exists()
    if is_cmodel and not (libdir / "libcmodel.so").exists():
        raise EngineUnavailable(
            f"{libdir} has libcmodel_bm1684x.so but no libcmodel.so, the name libbmlib opens",
            hint="rerun scripts/fetch-vendor-runtime.sh, or add the symlink libcmodel.so",
        )
    try:
        bmlib = ctypes.CDLL(str(_first(libdir, ("libbmlib.so.0", "libbmlib.so"))), mode=ctypes.RTLD_GLOBAL)
        bmrt = ctypes.CDLL(str(_first(libdir, ("libbmrt.so.1.0", "libbmrt.so"))), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise EngineUnavailable(
            f"cannot load the bmrt runtime from {libdir}: {exc}",
            hint="check that libsophon matches this system (llm-tpu status shows versions)",
        ) from None
    mem = BmDeviceMem
    _sig(bmlib, "bm_dev_request", c_int, POINTER(c_void_p), c_int)
    _sig(bmlib, "bm_dev_free", None, c_void_p)
    _sig(bmlib, "bm_dev_getcount", c_int, POINTER(c_int))
    _sig(bmlib, "bm_malloc_device_byte", c_int, c_void_p, POINTER(mem), c_uint)
    _sig(bmlib, "bm_free_device", None, c_void_p, mem)
    _sig(bmlib, "bm_memcpy_s2d_partial", c_int, c_void_p, mem, c_void_p, c_uint)
    _sig(bmlib, "bm_memcpy_d2s_partial", c_int, c_void_p, c_void_p, mem, c_uint)
    _sig(bmlib, "bm_memcpy_d2d_byte", c_int, c_void_p, mem, c_size_t, mem, c_size_t, c_size_t)
    _sig(bmlib, "bm_thread_sync", c_int, c_void_p)
    _sig(bmrt, "bmrt_create", c_void_p, c_void_p)
    _sig(bmrt, "bmrt_create_ex", c_void_p, POINTER(c_void_p), c_int)
    _sig(bmrt, "bmrt_destroy", None, c_void_p)
    _sig(bmrt, "bmrt_load_bmodel", c_bool, c_void_p, c_char_p)
    _sig(bmrt, "bmrt_load_bmodel_with_decrypt", c_bool, c_void_p, c_char_p, DECRYPT_FUNC)
    _sig(bmrt, "bmrt_load_bmodel_with_decrypt_lib", c_bool, c_void_p, c_char_p, c_char_p)
    _sig(bmrt, "bmrt_get_network_number", c_int, c_void_p)
    _sig(bmrt, "bmrt_get_network_names", None, c_void_p, POINTER(POINTER(c_char_p)))
    _sig(bmrt, "bmrt_get_network_info", POINTER(BmNetInfo), c_void_p, c_char_p)
    _sig(
        bmrt,
        "bmrt_launch_tensor_ex",
        c_bool,
        c_void_p,
        c_char_p,
        POINTER(BmTensor),
        c_int,
        POINTER(BmTensor),
        c_int,
        c_bool,
        c_bool,
    )
    libs = BmrtLibs(libdir=libdir, bmlib=bmlib, bmrt=bmrt, is_cmodel=is_cmodel)
    _LOADED[libdir] = libs
    return libs
