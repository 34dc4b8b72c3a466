"""Pinned layouts (`provision plan|apply --layout`): every spelling normalizes to whole MiB, so a pinned
layout the box already runs compares equal and stages nothing (a fleet must never reboot-loop)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fake_board import FakeBoard, Heaps
from test_provision_apply import cli

from appliance.errors import ProvisioningError
from provisioning.layout import MemoryLayout
from provisioning.layout_spec import parse_layout_spec


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    monkeypatch.setenv("FAKE_BOARD_SYSROOT", str(tmp_path))
    return FakeBoard(tmp_path)


@pytest.mark.parametrize(
    "spec",
    [
        "npu=7615,vpu=2944,vpp=4096",
        "npu=7615M vpu=2944MiB vpp=4G",
        "NPU=0x1dbf00000,vpu=0xb8000000,vpp=0x100000000",
        "npu=0x1dbf00fff,vpu=2944,vpp=4GiB",  # not whole MiB: floored like memory_edit.sh and ION report it
    ],
)
def test_spellings_normalize_to_the_same_layout(spec: str) -> None:
    layout, notes = parse_layout_spec(spec)
    assert layout == MemoryLayout(7615, 2944, 4096)
    assert bool(notes) == ("fff" in spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("npu=7615,vpu=2944", "vpp missing"),
        ("npu=7615,vpu=2944,vpp=lots", "'lots' is not a size"),
        ("npu=7615,npu=1,vpu=1,vpp=1", "npu is given twice"),
        ("tpu=1,npu=1,vpu=1,vpp=1", "is not <heap>=<size>"),
        ("npu=7.3G,vpu=1,vpp=1", "not a whole number of MiB"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ProvisioningError, match=message):
        parse_layout_spec(spec)


def test_pinned_layout_in_hex_stages_once_then_never_again(board: FakeBoard) -> None:
    spec = "npu=0x1b5800000,vpu=0x40000000,vpp=0xc0000000"  # 7000 / 1024 / 3072 MiB
    code, data = cli(board, "plan", "--layout", spec)
    assert code == 0 and data["plan"]["changed"] is True
    assert data["plan"]["layout"] == {"npu": 7000, "vpu": 1024, "vpp": 3072}
    code, data = cli(board, "apply", "--layout", spec)
    assert data["apply"]["action"] == "staged"
    assert board.reboot() == Heaps(7000, 1024, 3072)
    assert cli(board, "verify")[1]["outcome"] == "committed"
    code, data = cli(board, "plan", "--layout", spec)
    assert data["plan"]["changed"] is False
    code, data = cli(board, "apply", "--layout", "npu=7000M vpu=1G vpp=3G")
    assert data["apply"]["action"] == "unchanged"


def test_pinned_layout_beyond_the_maxima_or_the_model_is_refused(
    board: FakeBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(board, "plan", "--layout", "npu=7615,vpu=3072,vpp=3072")  # the vendor README's layout
    assert code == 1
    assert "vpu 3072 MiB exceeds the board maximum 2944 MiB" in capsys.readouterr().err
    code, _ = cli(board, "plan", "--layout", "npu=2000,vpu=1000,vpp=1000", "--need-mib", "5000")
    assert code == 1
    assert "the model needs 5000 MiB" in capsys.readouterr().err
