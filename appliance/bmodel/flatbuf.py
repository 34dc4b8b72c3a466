"""A bounds-checked reader of flatbuffer tables, read through their vtables.

The bmodel schema grows with every tpu-mlir release; reading through the vtable means fields a newer
compiler adds are simply not looked at, and fields an older one never wrote read as their defaults.
Every read is checked against the buffer, so a damaged or foreign file raises :class:`BrokenBuffer`
instead of an IndexError deep inside, and a lying vector length cannot make us loop for ever.
"""

from __future__ import annotations

import struct

__all__ = ["BrokenBuffer", "Table", "root_table"]

_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_BINARY = struct.Struct("<QQ")


class BrokenBuffer(ValueError):
    """The flatbuffer points outside itself or is otherwise not a flatbuffer."""


def _unpack(st: struct.Struct, buf: bytes, pos: int) -> int:
    if pos < 0 or pos + st.size > len(buf):
        raise BrokenBuffer(f"offset {pos} is outside the {len(buf)}-byte flatbuffer")
    return int(st.unpack_from(buf, pos)[0])


class Table:
    """One flatbuffer table at ``pos``; ``fid`` arguments are schema field ids."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vt = pos - _unpack(_I32, buf, pos)
        self.vt_len = _unpack(_U16, buf, self.vt)
        if self.vt_len < 4 or self.vt_len % 2:
            raise BrokenBuffer(f"bad vtable at offset {self.vt}")

    def _field(self, fid: int) -> int:
        slot = 4 + 2 * fid
        if slot >= self.vt_len:
            return 0
        rel = _unpack(_U16, self.buf, self.vt + slot)
        return self.pos + rel if rel else 0

    def has(self, fid: int) -> bool:
        return self._field(fid) != 0

    def u32(self, fid: int, default: int = 0) -> int:
        p = self._field(fid)
        return _unpack(_U32, self.buf, p) if p else default

    def i32(self, fid: int, default: int = 0) -> int:
        p = self._field(fid)
        return _unpack(_I32, self.buf, p) if p else default

    def u64(self, fid: int, default: int = 0) -> int:
        p = self._field(fid)
        return _unpack(_U64, self.buf, p) if p else default

    def f32(self, fid: int, default: float = 0.0) -> float:
        p = self._field(fid)
        if not p:
            return default
        if p + 4 > len(self.buf):
            raise BrokenBuffer(f"offset {p} is outside the flatbuffer")
        return float(struct.unpack_from("<f", self.buf, p)[0])

    def _deref(self, p: int) -> int:
        return p + _unpack(_U32, self.buf, p)

    def table(self, fid: int) -> Table | None:
        p = self._field(fid)
        return Table(self.buf, self._deref(p)) if p else None

    def binary(self, fid: int) -> tuple[int, int] | None:
        """An inline ``Binary {start, size}`` struct."""
        p = self._field(fid)
        if not p:
            return None
        if p + _BINARY.size > len(self.buf):
            raise BrokenBuffer(f"offset {p} is outside the flatbuffer")
        start, size = _BINARY.unpack_from(self.buf, p)
        return int(start), int(size)

    def _vector(self, fid: int, elem_size: int) -> tuple[int, int]:
        p = self._field(fid)
        if not p:
            return 0, 0
        start = self._deref(p)
        n = _unpack(_U32, self.buf, start)
        if start + 4 + n * elem_size > len(self.buf):
            raise BrokenBuffer(f"vector of {n} items at offset {start} runs past the flatbuffer")
        return start + 4, n

    def string(self, fid: int, default: str = "") -> str:
        start, n = self._vector(fid, 1)
        if not start:
            return default
        try:
            return self.buf[start : start + n].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BrokenBuffer(f"string at offset {start} is not UTF-8") from exc

    def bytes_(self, fid: int) -> bytes:
        start, n = self._vector(fid, 1)
        return bytes(self.buf[start : start + n]) if start else b""

    def u64s(self, fid: int) -> tuple[int, ...]:
        start, n = self._vector(fid, 8)
        return tuple(_unpack(_U64, self.buf, start + 8 * i) for i in range(n))

    def tables(self, fid: int) -> list[Table]:
        start, n = self._vector(fid, 4)
        return [Table(self.buf, self._deref(start + 4 * i)) for i in range(n)]

    def binaries(self, fid: int) -> list[tuple[int, int]]:
        start, n = self._vector(fid, _BINARY.size)
        out = []
        for i in range(n):
            s, z = _BINARY.unpack_from(self.buf, start + _BINARY.size * i)
            out.append((int(s), int(z)))
        return out


def root_table(buf: bytes) -> Table:
    if len(buf) < 8:
        raise BrokenBuffer("flatbuffer is shorter than 8 bytes")
    return Table(buf, _unpack(_U32, buf, 0))
