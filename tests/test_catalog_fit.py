"""`llm-tpu models catalog` says which catalog models fit the box's TPU memory as it is (fake SE7 board)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from support.fake_board import FakeBoard

from appliance.cli.main import main


def catalog_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["models", "catalog", *args])
    return code, out.getvalue(), err.getvalue()


def test_catalog_shows_what_fits_the_factory_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = FakeBoard(tmp_path)  # SE7 factory layout: npu 2414 + vpu 2944 + vpp 3072 = 8430 MiB
    monkeypatch.setenv("LLM_TPU_PROVISIONING__VPU_RESERVE_MIB", "1024")  # video keeps 1 GiB of the VPU heap
    code, out, _ = catalog_cli("--sysroot", str(board.root), "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert {r["capacity_mib"] for r in rows.values()} == {8430 - 1024}
    assert rows["qwen1.5-1.8b-int4"]["fits"] == "fits"
    assert rows["qwen-7b-int8"]["need_mib"] == 7168 + 359  # vendor threshold + 5% margin, rounded up
    assert rows["qwen-7b-int8"]["fits"] == "too-big"  # 7527 > 7406 once video has its share
    assert (
        rows["baichuan2-7b-int8"]["fits"] == "too-big" and rows["wizardcoder-15b-int4"]["fits"] == "too-big"
    )
    assert rows["qwen2-7b-int4"]["vendor_file"] == "qwen2-7b_int4_seq8192_1dev.bmodel"
    code, text, _ = catalog_cli("--sysroot", str(board.root))
    assert "TPU memory for a model on this box: 7406 MiB" in text
    line = next(x for x in text.splitlines() if x.startswith("baichuan2-7b-int4 "))
    assert "sentencepiece" in line and "6452" in line and "fits" in line


def test_catalog_without_a_tpu_says_unknown_and_why(tmp_path: Path) -> None:
    code, out, err = catalog_cli("--sysroot", str(tmp_path), "--json")
    assert code == 0
    assert {r["fits"] for r in json.loads(out)} == {"unknown"}
    assert "note: ION heaps" in err
