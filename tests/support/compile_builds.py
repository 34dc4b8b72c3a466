"""Our compiles of the tiny-qwen2 fixture in the layouts its bmodels were built with, and the byte
comparison against the vendor's files.

Two llm_convert builds of the same model differ in the create time and in a few bytes of padding
that the tools leave uninitialised; so do ours. PADDING lists where those bytes are in the fixture
files, found by comparing our builds with them: in the fused-greedy build three bytes inside
lm_head's IR, in the ``--sample`` builds sixteen 3-byte holes and one single byte in the dynamic
nets' (greedy_head, sample_head) IR, the same offsets in bf16 and w4bf16.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliance.compile.driver import CompileResult, compile_bmodel
from appliance.compile.plan import BuildOptions
from support.vendor_runtime import FIXTURES, model_tool


@dataclass(frozen=True)
class Layout:
    fixture: str
    options: BuildOptions
    kernel_removed: bool  # the fixture had `model_tool --kernel_remove` applied


LAYOUTS = {
    "bf16": Layout("tiny-qwen2_bf16_seq64_1dev.bmodel", BuildOptions("bf16", 64, False), False),
    "bf16_sample": Layout("tiny-qwen2_bf16_seq64_1dev_sample.bmodel", BuildOptions("bf16", 64, True), True),
    "w4bf16_sample": Layout(
        "tiny-qwen2_w4bf16_seq64_1dev_sample.bmodel", BuildOptions("w4bf16", 64, True), True
    ),
}

_HOLES = (
    577581,
    577686,
    577782,
    577918,
    578055,
    578227,
    578399,
    578566,
    578741,
    578926,
    579098,
    579215,
    579358,
    579530,
    579715,
    579859,
)
_SAMPLE_PADDING = frozenset({561174} | {s + k for s in _HOLES for k in range(3)})
PADDING = {
    "bf16": frozenset({6156309, 6156310, 6156311}),
    "bf16_sample": _SAMPLE_PADDING,
    "w4bf16_sample": _SAMPLE_PADDING,
}


def compile_layout(name: str, dest: Path, src: Path = FIXTURES / "hf") -> CompileResult:
    out = dest / f"{name}.bmodel"
    result = compile_bmodel(src, LAYOUTS[name].options, dest / "work", out)
    if LAYOUTS[name].kernel_removed:
        comparable = dest / f"{name}.nokernel.bmodel"
        shutil.copyfile(out, comparable)
        tool(["--kernel_remove", str(comparable)])
    return result


def comparable_file(name: str, dest: Path) -> Path:
    """Our build in the form the fixture file is in (kernel module removed where it was)."""
    return dest / (f"{name}.nokernel.bmodel" if LAYOUTS[name].kernel_removed else f"{name}.bmodel")


def tool(args: list[str]) -> str:
    r = subprocess.run([str(model_tool()), *args], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def binary_offset(path: Path) -> int:
    """Where the binary section starts: after the 64-byte header and the flatbuffer, 4 KiB aligned."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    (fb_size,) = struct.unpack("<I", head[8:12])
    return -(-(64 + fb_size) // 4096) * 4096


def differing_offsets(a: Path, b: Path, start: int = 0) -> list[int]:
    da, db = a.read_bytes(), b.read_bytes()
    assert len(da) == len(db), f"{a.name} has {len(da)} bytes, {b.name} {len(db)}"
    return [i for i in range(start, len(da)) if da[i] != db[i]]


def described(path: Path) -> str:
    """The whole flatbuffer, field by field (model_tool --print), without the create time."""
    text = re.sub(r'time: ".*"', "time", tool(["--print", str(path)]))
    # --kernel_remove leaves the removed module's mode field uninitialised
    return re.sub(r"(kernel_module: \{[^}]*\}[^}]*?)mode: -?\d+", r"\1mode", text, flags=re.S)


def command_ranges(path: Path) -> list[range]:
    """Where the nets' instruction streams and IR are (binary_bdc, binary_gdma, binary_ir): the only
    places the tools leave uninitialised bytes."""
    text = tool(["--print", str(path)])
    found = re.finditer(r"binary_(?:bdc|gdma|ir): \{\s*start: (\d+),\s*size: (\d+)", text)
    return [range(int(m[1]), int(m[1]) + int(m[2])) for m in found]


def assert_sample_build_equals_fixture(name: str, ours: Path) -> None:
    """A ``--sample`` build (kernel module removed) equals the vendor's: the whole flatbuffer field by
    field except the create time, and the binary section except the known padding bytes."""
    fixture = FIXTURES / LAYOUTS[name].fixture
    assert described(ours) == described(fixture)
    start = binary_offset(fixture)
    assert start == binary_offset(ours)
    diff = set(differing_offsets(ours, fixture, start))
    assert diff <= PADDING[name], f"bytes differ outside the padding: {sorted(diff - PADDING[name])[:20]}"
    assert len(diff) <= len(PADDING[name]) == 49
