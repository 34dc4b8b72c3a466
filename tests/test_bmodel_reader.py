"""The pure-Python bmodel reader against the vendor's own `model_tool --info` on real bmodels."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.vendor_runtime import FIXTURES, model_tool, require_vendor_runtime

from appliance.bmodel.layout import discover_layout, net_descs
from appliance.bmodel.memory import bmodel_memory, read_bmodel_memory
from appliance.bmodel.reader import BmodelInfo, read_bmodel
from appliance.bmodel.report import print_bmodel_info
from appliance.errors import ModelFormatError

PLAIN = sorted(p for p in FIXTURES.glob("*.bmodel") if "encrypted" not in p.name)
ENCRYPTED = FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample_nokernel_encrypted_block0_cache0.bmodel"
NET_RE = re.compile(r"^net (\d+): \[(.+)\]  (static|dynamic)$")
IO_RE = re.compile(r"^(input|output): (.+), \[(.*)\], (\w+), scale: (\S+), zero_point: (-?\d+)$")
MEM_RE = re.compile(r"^device mem size: (\d+) \(weight: (\d+), instruct: (\d+), runtime: (\d+)\)$")


def parse_info(text: str) -> dict:
    """The parts of `model_tool --info` output that the reader must reproduce."""
    out: dict = {"nets": []}
    for line in text.splitlines():
        if line.startswith("bmodel version: "):
            out["version"] = line.split(": ", 1)[1]
        elif line.startswith("chip: "):
            out["chip"] = line.split(": ", 1)[1]
        elif line.startswith("kernel_module size: "):
            out["kernel_size"] = int(line.split(": ", 1)[1])
        elif m := NET_RE.match(line):
            out["nets"].append({"name": m[2], "dynamic": m[3] == "dynamic", "addr_mode": 0, "io": []})
        elif line.startswith("addr mode: "):
            out["nets"][-1]["addr_mode"] = int(line.split(": ", 1)[1])
        elif m := IO_RE.match(line):
            dims = tuple(int(d.strip().removeprefix("max:")) for d in m[3].split(",") if d.strip())
            out["nets"][-1]["io"].append((m[1], m[2], dims, m[4], float(m[5]), int(m[6])))
        elif m := MEM_RE.match(line):
            out["mem"] = tuple(int(x) for x in m.groups())
    return out


def reader_view(info: BmodelInfo) -> dict:
    nets = []
    for n in info.nets:
        st = n.stages[0]
        io = [("input", t.name, t.shape, t.dtype, t.scale, t.zero_point) for t in st.inputs]
        io += [("output", t.name, t.shape, t.dtype, t.scale, t.zero_point) for t in st.outputs]
        nets.append({"name": n.name, "dynamic": n.is_dynamic, "addr_mode": n.addr_mode, "io": io})
    mem = bmodel_memory(info)
    return {
        "version": f"{info.type}.{info.version}",
        "chip": info.chip,
        "kernel_size": info.kernel_module_size,
        "nets": nets,
        "mem": (mem.device_mem_bytes, mem.weight_bytes, mem.instruct_bytes, mem.runtime_bytes),
    }


@pytest.mark.parametrize("path", PLAIN, ids=lambda p: p.name)
def test_reader_matches_committed_model_tool_output(path: Path) -> None:
    expected = parse_info(Path(f"{path}.info.txt").read_text())
    assert len(expected["nets"]) >= 7 and "mem" in expected
    assert reader_view(read_bmodel(path)) == expected


def test_reader_matches_model_tool_after_decrypt() -> None:
    # The decrypted twin of the encrypted fixture is the _sample build: same nets, same memory.
    expected = parse_info(Path(f"{ENCRYPTED}.info_after_decrypt.txt").read_text())
    assert reader_view(read_bmodel(FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel")) == expected


@pytest.mark.parametrize("path", [*PLAIN, ENCRYPTED], ids=lambda p: p.name)
def test_real_model_tool_agrees_with_committed_output_and_reader(path: Path) -> None:
    require_vendor_runtime()
    run = subprocess.run(
        [str(model_tool()), "--info", path.name], cwd=path.parent, capture_output=True, text=True, timeout=60
    )
    committed = Path(f"{path}.info.txt").read_text()
    if path == ENCRYPTED:
        assert run.returncode == 255
        assert "is broken" in run.stdout + run.stderr and "is broken" in committed
        with pytest.raises(ModelFormatError, match="encrypted"):
            read_bmodel(path)
        return
    assert run.returncode == 0, run.stderr
    assert parse_info(run.stdout + run.stderr) == parse_info(committed)
    assert parse_info(run.stdout) == reader_view(read_bmodel(path))


def test_layout_variants_are_discovered_from_the_nets() -> None:
    def layout(name: str):
        info = read_bmodel(FIXTURES / f"tiny-qwen2_{name}.bmodel")
        return discover_layout(net_descs(info), device_num=info.device_num)

    greedy = layout("bf16_seq64_1dev")
    assert (greedy.seq_len, greedy.hidden, greedy.layers, greedy.kv_heads, greedy.head_dim) == (
        64,
        64,
        2,
        2,
        16,
    )
    assert greedy.lm_head_greedy and greedy.heads == () and greedy.vocab == 0
    sample = layout("bf16_seq64_1dev_sample")
    assert not sample.lm_head_greedy and sample.vocab == 2048
    assert sample.heads == ("greedy_head", "sample_head") and sample.sample_head == "sample_head"
    assert sample.cache_addr_modes == (1, 1) and not sample.dynamic_prefill and sample.prefill_has_mask
    assert layout("bf16_seq64_1dev_sample_cache_addr_basic").cache_addr_modes == (0, 0)
    dyn = layout("bf16_seq64_1dev_sample_dynamic")
    assert dyn.dynamic_prefill and not dyn.prefill_has_mask
    assert layout("w4bf16_seq64_1dev_sample").dtype_name == "bf16"


def test_memory_beyond_model_tool() -> None:
    io_alone = read_bmodel_memory(FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel")
    basic = read_bmodel_memory(FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample_cache_addr_basic.bmodel")
    assert io_alone.device_mem_bytes == basic.device_mem_bytes == 865352
    # io_alone: block_cache I/O (holding the KV cache) is extra; basic: the engine owns the KV cache
    assert io_alone.kv_app_bytes == 0 and basic.kv_app_bytes == 2 * 2 * 64 * 2 * 16 * 2
    assert io_alone.io_alone_bytes > basic.io_alone_bytes > 0  # the heads are io_alone in both
    assert io_alone.total_bytes == io_alone.device_mem_bytes + io_alone.io_alone_bytes
    assert io_alone.largest_single_allocation == io_alone.weight_bytes


def test_encrypted_bmodel_is_named_as_such() -> None:
    with pytest.raises(ModelFormatError, match="encrypted") as err:
        read_bmodel(ENCRYPTED)
    assert err.value.hint and "decrypt" in err.value.hint


@pytest.mark.parametrize("cut", [0, 7, 40, 64, 200, 16383, 16384, 500_000])
def test_truncated_bmodel_is_refused(tmp_path: Path, cut: int) -> None:
    src = FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"
    dst = tmp_path / "cut.bmodel"
    dst.write_bytes(src.read_bytes()[:cut])
    with pytest.raises(ModelFormatError, match=r"truncated|not a bmodel"):
        read_bmodel(dst)


def test_garbage_and_corruption_raise_format_errors_only(tmp_path: Path) -> None:
    rng = random.Random(1234)
    junk = tmp_path / "junk.bmodel"
    junk.write_bytes(rng.randbytes(5000))
    with pytest.raises(ModelFormatError, match="not a bmodel"):
        read_bmodel(junk)
    with pytest.raises(ModelFormatError, match="directory"):
        read_bmodel(tmp_path)
    with pytest.raises(ModelFormatError, match="does not exist"):
        read_bmodel(tmp_path / "missing.bmodel")
    good = bytearray((FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel").read_bytes()[:20000])
    bad = tmp_path / "bad.bmodel"
    refused = 0
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(64, 64 + 16320)] = rng.randrange(256)
        bad.write_bytes(bytes(data) + bytes(900_000))
        try:
            read_bmodel(bad)
        except ModelFormatError:
            refused += 1
    assert refused > 10  # damage is caught, and nothing but ModelFormatError escapes


def test_report_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"
    assert print_bmodel_info(path, as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chip"] == "BM1684X" and data["version"] == "B.2.2+v1.30.2-20260831"
    assert [n["name"] for n in data["nets"]][:4] == ["embedding", "lm_head", "greedy_head", "sample_head"]
    assert data["memory"]["device_mem_bytes"] == 865352 and data["llm"]["layers"] == 2
    assert print_bmodel_info(path, as_json=False) == 0
    text = capsys.readouterr().out
    assert "device mem (model_tool): 865,352 B" in text and "largest single allocation" in text
    assert "m_logits [max:1, max:2048] float32" in text


def test_reader_reads_only_header_and_flatbuffer(tmp_path: Path) -> None:
    # A sparse file claiming gigabytes of weights is read in milliseconds: the blob is never read.
    src = FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"
    big = tmp_path / "big.bmodel"
    shutil.copyfile(src, big)
    with open(big, "r+b") as fh:
        fh.truncate(6 << 30)
    info = read_bmodel(big)
    assert info.file_size == 6 << 30 and info.nets[0].name == "embedding"
