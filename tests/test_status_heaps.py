"""/api/status shows the board's live ION heaps through the probe `llm-tpu serve` passes in
(provisioning.board.tpu_status); the service itself imports nothing of provisioning."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from support.fake_board import FakeBoard, Heaps
from support.service import curl, in_process

from provisioning.board import tpu_status


def test_status_shows_the_live_heaps_of_the_board(tmp_path: Path) -> None:
    board = FakeBoard(tmp_path / "board", Heaps(npu=3072, vpu=2048, vpp=3072))
    board.set_heaps(Heaps(npu=3072, vpu=2048, vpp=3072), used_mib=100)
    with in_process(tmp_path, device_probe=functools.partial(tpu_status, board.root)) as service:
        status, body = curl(service.socket, "/api/status")
    assert status == 200
    heaps = json.loads(body)["tpu"]["heaps"]
    assert heaps["npu"]["size_mib"] == 3072 and heaps["vpu"]["size_mib"] == 2048
    assert heaps["npu"]["used_mib"] == 100


def test_without_a_board_probe_the_status_says_why_there_are_no_heaps(tmp_path: Path) -> None:
    with in_process(tmp_path) as service:
        status, body = curl(service.socket, "/api/status")
    tpu = json.loads(body)["tpu"]
    assert status == 200 and "heaps" not in tpu and "board probe" in tpu["heaps_unavailable"]
