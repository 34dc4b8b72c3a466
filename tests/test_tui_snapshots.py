"""SVG snapshots of the chat TUI (pytest-textual-snapshot): the main screen, the chat list, the
parameters modal and the status panel. The app talks to the real service (scripted engine); what it
shows is fixed: saved chats with fixed texts, a fixed size, no clock, and the status panel's data with
its machine-dependent parts (versions, device paths) replaced. After a deliberate change to the look:
`.venv/bin/python -m pytest tests/test_tui_snapshots.py --snapshot-update`, then review the SVGs."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_board import FakeBoard, Heaps
from support.service import InProcessService, in_process
from support.tui_pilot import app_for, until
from textual.pilot import Pilot

from appliance.client import ServiceClient
from appliance.tui import ChatApp, ChatStore
from appliance.tui.screens import StatusScreen
from appliance.tui.store import ChatParams
from provisioning.board import tpu_status

SIZE = (110, 32)
ANSWER = (
    "A list comprehension builds a list in one expression:\n\n"
    "```python\nsquares = [n * n for n in range(10)]\n```\n\n"
    "It reads as *for each n, take n squared*."
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    root = tmp_path_factory.mktemp("tui-snap")
    board = FakeBoard(root / "board", Heaps(npu=3072, vpu=2048, vpp=3072))
    board.set_heaps(Heaps(npu=3072, vpu=2048, vpp=3072), used_mib=612)
    with in_process(root, device_probe=functools.partial(tpu_status, board.root)) as svc:
        yield svc


def _app(service: InProcessService, tmp_path: Path) -> ChatApp:
    store = ChatStore(tmp_path / "chats.sqlite3")
    store.create_chat("Weekend plans")
    store.create_chat("Fox story", ChatParams(temperature=0.9))
    chat = store.create_chat("Python lists", ChatParams(system="Answer briefly.", top_k=40, max_tokens=256))
    store.add_message(chat.id, "user", "What is a list comprehension?")
    store.add_message(chat.id, "assistant", ANSWER)
    store.add_message(chat.id, "user", "And a generator?")
    store.add_message(
        chat.id, "assistant", "A generator yields values one at a", note="(interrupted: stopped with Esc)"
    )
    return app_for(service.socket, 8, store=store)


def _ready(app: ChatApp) -> Any:
    async def run_before(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.ready)
        await pilot.pause()

    return run_before


def test_main_screen(service: InProcessService, tmp_path: Path, snap_compare: Any) -> None:
    app = _app(service, tmp_path)
    assert snap_compare(app, terminal_size=SIZE, run_before=_ready(app))


def test_chat_list_focused(service: InProcessService, tmp_path: Path, snap_compare: Any) -> None:
    app = _app(service, tmp_path)

    async def run_before(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.ready)
        app.chat_list.focus()
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_params_modal(service: InProcessService, tmp_path: Path, snap_compare: Any) -> None:
    app = _app(service, tmp_path)

    async def run_before(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.ready)
        await pilot.press("f3")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_status_panel(service: InProcessService, tmp_path: Path, snap_compare: Any) -> None:
    app = _app(service, tmp_path)
    status = ServiceClient.for_socket(service.socket).status()  # the real answer ...
    status["versions"] = {
        "llm-tpu-appliance": "0.1.0",
        "python": "3.11.7",
        "textual": "8.2.8",
    }  # ... made fixed
    status["tpu"]["devices"] = ["/dev/bm-sophon0"]

    async def run_before(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.ready)
        app.push_screen(StatusScreen(status, 1234))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
