"""Read a bmodel's header and flatbuffer (never its multi-GB binary section).

A bmodel is a 64-byte little-endian header (magic 0xFF55AAEE, header_size, flatbuffers_size,
binary_size, 12 reserved zero words), the flatbuffer (root table ``Model``), then the binary blob
that weights and commands point into. :func:`read_bmodel` returns a :class:`BmodelInfo` with the
nets, their stages, tensors, address modes and everything the memory figures need.

Refusals are :class:`~appliance.errors.ModelFormatError` with a message that says which case it is:
not a bmodel, truncated, encrypted (the 8-byte prefix stays clear but the rest of the header is
ciphertext), or a damaged flatbuffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from appliance.bmodel.flatbuf import BrokenBuffer, Table, root_table
from appliance.errors import ModelFormatError

__all__ = [
    "BMODEL_MAGIC",
    "DTYPES",
    "BmodelInfo",
    "CoeffInfo",
    "NetInfo",
    "StageInfo",
    "SubnetInfo",
    "TensorInfo",
    "read_bmodel",
]

BMODEL_MAGIC = 0xFF55AAEE
HEADER = struct.Struct("<4I12I")
PLAIN_HEADER_SIZE = 64
# Largest flatbuffer we accept: the biggest vendor LLM bmodels carry a few MiB of flatbuffer.
MAX_FLATBUFFER = 512 << 20

# bm_data_type_t code -> (model_tool name, bits per element)
DTYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 32),
    1: ("float16", 16),
    2: ("int8", 8),
    3: ("uint8", 8),
    4: ("int16", 16),
    5: ("uint16", 16),
    6: ("int32", 32),
    7: ("uint32", 32),
    8: ("bfloat16", 16),
    9: ("int4", 4),
    10: ("uint4", 4),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype_code: int
    shape: tuple[int, ...]  # this stage's shape (the max shape for dynamic nets)
    scale: float = 1.0
    zero_point: int = 0
    size: int = 0  # device bytes as stored in the bmodel
    device_addr: int = 0
    mem_type: int = 0

    @property
    def dtype(self) -> str:
        return DTYPES.get(self.dtype_code, (f"dtype{self.dtype_code}", 32))[0]

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        bits = DTYPES.get(self.dtype_code, ("", 32))[1]
        return (self.elements * bits + 7) // 8


@dataclass(frozen=True)
class CoeffInfo:
    check_code: bytes  # sha256 of the weights; equal codes are stored and loaded once
    start: int  # relative to the binary section (header_size + flatbuffers_size)
    size: int
    encrypt_mode: int = 0
    decrypt_size: int = 0


@dataclass(frozen=True)
class SubnetInfo:
    mode: int  # 0 TPU, 1 CPU
    is_dynamic: bool
    ir_len: int  # 32-bit words of dynamic IR
    cmd_bytes: int  # static command bytes (bdc + gdma, plus per-core sdma/hau)


@dataclass(frozen=True)
class StageInfo:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    is_dynamic: bool
    ctx_size: int
    ctx_sizes: tuple[int, ...]
    coeff: CoeffInfo | None
    subnets: tuple[SubnetInfo, ...]
    core_num: int
    io_addr: int
    io_size: int
    cpu_mem_size: int


@dataclass(frozen=True)
class NetInfo:
    index: int
    name: str
    addr_mode: int  # 0 basic, 1 io_alone
    stages: tuple[StageInfo, ...]
    cascade_device: int | None = None
    cascade_main: str = ""

    @property
    def is_dynamic(self) -> bool:
        return bool(self.stages and self.stages[0].is_dynamic)


@dataclass(frozen=True)
class BmodelInfo:
    path: str
    file_size: int
    header_size: int
    flatbuffers_size: int
    type: str
    version: str
    time: str
    chip: str
    device_num: int
    neuron_size: int
    kernel_module_name: str
    kernel_module_size: int
    nets: tuple[NetInfo, ...]
    binary_end: int = 0  # highest end of a weight or kernel blob, relative to the binary section

    def net(self, name: str) -> NetInfo | None:
        for n in self.nets:
            if n.name == name:
                return n
        return None

    @property
    def binary_offset(self) -> int:
        return self.header_size + self.flatbuffers_size


def _tensor(t: Table, stage: int) -> TensorInfo:
    shapes = t.tables(5)
    shape_t = shapes[min(stage, len(shapes) - 1)] if shapes else None
    return TensorInfo(
        name=t.string(0),
        dtype_code=t.u32(1),
        shape=shape_t.u64s(0) if shape_t else (),
        scale=t.f32(7, 1.0),
        zero_point=t.i32(10),
        size=t.u64(4),
        device_addr=t.u64(3),
        mem_type=t.u32(6),
    )


def _cmd_group_bytes(groups: list[Table]) -> int:
    total = 0
    for g in groups:
        for fid in (2, 3):  # binary_bdc, binary_gdma
            b = g.binary(fid)
            total += b[1] if b else 0
    return total


def _subnet(s: Table) -> SubnetInfo:
    cmd = _cmd_group_bytes(s.tables(1))
    for core in s.tables(14):  # core_commands (multi-core builds)
        cmd += _cmd_group_bytes(core.tables(0))
        cmd += sum(size for _, size in core.binaries(1)) + sum(size for _, size in core.binaries(2))
    return SubnetInfo(mode=s.i32(0), is_dynamic=bool(s.i32(5)), ir_len=s.u32(7), cmd_bytes=cmd)


def _stage(p: Table, index: int) -> StageInfo:
    coeff_t = p.table(4)
    coeff = None
    if coeff_t is not None:
        binary = coeff_t.binary(2)
        coeff = CoeffInfo(
            check_code=coeff_t.bytes_(1),
            start=binary[0] if binary else 0,
            size=binary[1] if binary else 0,
            encrypt_mode=coeff_t.i32(4),
            decrypt_size=coeff_t.u64(5),
        )
    subnets = tuple(_subnet(s) for s in p.tables(12))
    if not subnets and p.has(8):  # very old bmodels: commands on the stage, no subnets
        subnets = (SubnetInfo(0, bool(p.i32(5)), 0, _cmd_group_bytes(p.tables(8))),)
    return StageInfo(
        inputs=tuple(_tensor(t, index) for t in p.tables(0)),
        outputs=tuple(_tensor(t, index) for t in p.tables(1)),
        is_dynamic=bool(p.i32(5)),
        ctx_size=p.u64(3),
        ctx_sizes=p.u64s(14),
        coeff=coeff,
        subnets=subnets,
        core_num=max(1, p.u32(16)),
        io_addr=p.u64(17),
        io_size=p.u64(18),
        cpu_mem_size=p.u32(13),
    )


def _net(n: Table, index: int) -> NetInfo:
    cascade = n.table(4)
    return NetInfo(
        index=index,
        name=n.string(0),
        addr_mode=n.i32(5),
        stages=tuple(_stage(p, i) for i, p in enumerate(n.tables(3))),
        cascade_device=cascade.u32(0) if cascade is not None else None,
        cascade_main=cascade.string(2) if cascade is not None else "",
    )


def parse_model(fb: bytes, *, path: str = "", file_size: int = 0, header_size: int = 64) -> BmodelInfo:
    """Parse the flatbuffer of a bmodel (raises BrokenBuffer on damage)."""
    root = root_table(fb)
    kernel = root.table(6)
    kbin = kernel.binary(1) if kernel is not None else None
    return BmodelInfo(
        path=path,
        file_size=file_size,
        header_size=header_size,
        flatbuffers_size=len(fb),
        type=root.string(0),
        version=root.string(1),
        time=root.string(2),
        chip=root.string(3),
        device_num=max(1, root.u32(7)),
        neuron_size=root.u64(5),
        kernel_module_name=kernel.string(0) if kernel is not None else "",
        kernel_module_size=kbin[1] if kbin else 0,
        nets=(nets := tuple(_net(n, i) for i, n in enumerate(root.tables(4)))),
        binary_end=max(
            [sum(kbin) if kbin else 0]
            + [st.coeff.start + st.coeff.size for n in nets for st in n.stages if st.coeff is not None]
        ),
    )


def read_bmodel(path: Path | str) -> BmodelInfo:
    """Read and check the header and flatbuffer of ``path``."""
    path = Path(path)
    hint = "check the file (size, sha256) or download it again"
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER.size)
            file_size = fh.seek(0, 2)
            if len(head) < HEADER.size:
                raise ModelFormatError(
                    f"{path} is not a bmodel: it has {len(head)} bytes, less than a bmodel header", hint=hint
                )
            magic, header_size, fb_size, _binary_size, *reserved = HEADER.unpack(head)
            if magic != BMODEL_MAGIC:
                raise ModelFormatError(
                    f"{path} is not a bmodel (magic {magic:#010x}, expected {BMODEL_MAGIC:#010x})",
                    hint="pass a .bmodel compiled by tpu-mlir for the BM1684X",
                )
            if header_size != PLAIN_HEADER_SIZE or any(reserved) or not 0 < fb_size <= MAX_FLATBUFFER:
                raise ModelFormatError(
                    f"{path} is an encrypted bmodel (its header after the first 8 bytes is not plain)",
                    hint="load it with the engine option decrypt_lib=<your cipher library>, "
                    "or decrypt it with `model_tool --decrypt`",
                )
            if header_size + fb_size > file_size:
                raise ModelFormatError(
                    f"{path} is truncated: the header announces a {fb_size}-byte flatbuffer but the file "
                    f"has only {file_size} bytes",
                    hint=hint,
                )
            fh.seek(header_size)
            fb = fh.read(fb_size)
    except FileNotFoundError:
        raise ModelFormatError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ModelFormatError(f"{path} is a directory, not a bmodel") from None
    except OSError as exc:
        raise ModelFormatError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        info = parse_model(fb, path=str(path), file_size=file_size, header_size=header_size)
    except (BrokenBuffer, struct.error) as exc:
        raise ModelFormatError(f"{path} is a damaged bmodel: {exc}", hint=hint) from None
    if not info.nets:
        raise ModelFormatError(f"{path} is a damaged bmodel: it holds no nets", hint=hint)
    _check_binaries_fit(info, path)
    return info


def _check_binaries_fit(info: BmodelInfo, path: Path) -> None:
    """Weights past the end of the file mean a truncated copy (binary_size wraps, so use the file size)."""
    have = info.file_size - info.binary_offset
    if info.binary_end > have:
        raise ModelFormatError(
            f"{path} is truncated: its weights end {info.binary_end} bytes into the binary section "
            f"but only {max(have, 0)} bytes follow the flatbuffer",
            hint="check the file (size, sha256) or download it again",
        )
