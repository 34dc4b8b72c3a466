"""The chat TUI's model picker switches models for real (issue 16 with issue 13's models on demand).

The real service with the scripted engine on a temporary socket, with a second model installed through
/api/pull (tests/support/service.py, as tests/test_model_switch.py does); the app is driven with Pilot.
The fit badge's arithmetic is checked on /api/tags-shaped records, since the scripted and host engines
hold no TPU memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import InProcessService, http_client, in_process, install_model, running_models
from support.tui_pilot import app_for, errors, run_async, send, until
from textual.pilot import Pilot
from textual.widgets import OptionList

from appliance.tui import ChatApp, ChatStore
from appliance.tui.screens import ModelsScreen, StatusScreen
from appliance.tui.screens.models import model_lines

MIB = 2**20


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(root))
    return root


@pytest.fixture
def two_models(tmp_path: Path, models_dir: Path) -> Iterator[InProcessService]:
    """The configured "scripted" model, slow enough to watch a switch wait for it, and "tiny-b"."""
    with in_process(tmp_path, model={"scripted": {"step_delay_ms": 40.0}}) as svc:
        install_model(http_client(svc), "tiny-b")
        yield svc


def loaded(svc: InProcessService) -> list[str]:
    return [m["model"] for m in running_models(http_client(svc))]


async def pick(pilot: Pilot[None], app: ChatApp, name: str) -> None:
    await pilot.press("f5")
    await until(pilot, lambda: isinstance(app.screen, ModelsScreen))
    screen = app.screen
    assert isinstance(screen, ModelsScreen)
    options = screen.query_one(OptionList)
    options.focus()
    options.highlighted = screen.names.index(name)
    await pilot.press("enter")
    await until(pilot, lambda: not app.screen.is_modal)


@run_async
async def test_the_picker_switches_the_service_and_each_chat_keeps_its_model(
    two_models: InProcessService, tmp_path: Path
) -> None:
    path = tmp_path / "chats.sqlite3"
    app = app_for(two_models.socket, 500, store=ChatStore(path))
    async with app.run_test(size=(110, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        assert app.status.model == "scripted" and app.chat.model == ""
        await send(pilot, "Hi")  # a slow answer is running when the other model is picked
        await until(pilot, lambda: app.answering and (app.status.streamed_tokens or 0) > 0)
        await pick(pilot, app, "tiny-b")
        # the service waits for the running answer before it unloads: the status line says so meanwhile
        await until(pilot, lambda: "loading tiny-b…" in app.status.line)
        assert app.answering
        await pilot.press("escape")  # stops the answer, not the switch waiting for it
        await until(pilot, lambda: app.chat.model == "tiny-b" and app.status.state == "ready", 30)
        (_, answer) = app.store.messages(app.chat.id)
        assert answer.content and answer.note == "(interrupted: stopped with Esc)"
        assert loaded(two_models) == ["tiny-b"] and app.status.model == "tiny-b"
        assert app.store.chat(app.chat.id).model == "tiny-b"
        await pilot.press("f4")  # the status panel shows the new model
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        assert "model      tiny-b" in app.screen.lines  # type: ignore[attr-defined]
        await pilot.press("escape")
        app.options["num_predict"] = 3
        await send(pilot, "And now?")  # the request names the chat's model: no second load
        await until(pilot, lambda: len(app.history) == 4 and app.status.stats is not None)
        stats = app.status.stats
        assert stats is not None and stats.timings.load_duration == 0
        assert not errors(app)
    app.store.close()

    # Another client switches the service back; the saved chat still names tiny-b.
    http = http_client(two_models)
    http.post("/api/generate", json={"model": "scripted", "stream": False}).raise_for_status()
    assert loaded(two_models) == ["scripted"]
    app = app_for(two_models.socket, 3, store=ChatStore(path))
    async with app.run_test(size=(110, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        first = app.chat
        assert first.model == "tiny-b" and app.status.model == "scripted"
        await pilot.press("ctrl+n")  # a new chat starts with the current chat's model
        await until(pilot, lambda: app.chat.id != first.id)
        assert app.chat.model == "tiny-b"
        await pick(pilot, app, "scripted")  # this one talks to the configured model
        await until(pilot, lambda: app.chat.model == "scripted" and app.status.state == "ready")
        assert loaded(two_models) == ["scripted"]
        await send(pilot, "Hello")  # the new chat gets its first message, so it is listed first now
        await until(pilot, lambda: len(app.history) == 2)
        await app.open_chat(first.id)  # back to the first chat: its next request switches to tiny-b
        await send(pilot, "Still there?")
        await until(pilot, lambda: len(app.history) == 6 and not app.answering, 30)
        stats = app.status.stats
        assert stats is not None and stats.timings.load_duration > 0  # this answer paid the switch
        assert loaded(two_models) == ["tiny-b"] and app.status.model == "tiny-b"
        assert not errors(app)


@run_async
async def test_a_refused_switch_is_a_notification_and_the_chat_keeps_its_model(
    tmp_path: Path, models_dir: Path
) -> None:
    with in_process(tmp_path, model={"pinned": True}) as svc:
        install_model(http_client(svc), "tiny-b")
        store = ChatStore(tmp_path / "chats.sqlite3")
        gone = store.create_chat("old", model="removed-model")  # its model was deleted since
        app = app_for(svc.socket, 3, store=store)
        async with app.run_test(size=(110, 40)) as pilot:
            await until(pilot, lambda: app.ready)
            assert app.chat.id == gone.id
            await send(pilot, "Hi")
            await until(pilot, lambda: bool(errors(app)) and not app.answering)
            (refused,) = errors(app)
            assert refused.startswith("cannot switch to removed-model (model_not_found): ")
            assert "'removed-model' is not served here" in refused
            assert "model.pinned" in refused  # the service's hint
            assert app.history == [] and app.prompt.value == "Hi"  # nothing happened; the text is back
            assert app.status.model == "scripted" and app.status.state == "ready"

            await pick(pilot, app, "tiny-b")
            await until(pilot, lambda: len(errors(app)) == 2)
            assert "cannot switch to tiny-b (model_not_found)" in errors(app)[1]
            assert "model.pinned is true" in errors(app)[1]
            await until(pilot, lambda: app.status.state == "ready")
            assert app.chat.model == "removed-model" == app.store.chat(gone.id).model  # kept
            assert loaded(svc) == ["scripted"]


def test_the_fit_badge_counts_the_need_against_the_free_heap_and_the_loaded_model() -> None:
    status = {
        "model": {"name": "big"},
        "tpu": {"heaps": {"npu": {"name": "npu", "size_mib": 4000, "used_mib": 3000}}},
    }
    tags = [
        {"name": "big", "size_vram": 2000 * MIB, "details": {"format": "bmrt"}},
        {"name": "fits", "size_vram": 3000 * MIB, "details": {"format": "bmrt"}},  # 1000 free + 2000 freed
        {"name": "too-big", "size_vram": 3001 * MIB, "details": {"format": "sail"}},
        {"name": "host", "size_vram": 0, "details": {"format": "host"}},
        {"name": "unknown", "size_vram": 0, "details": {"format": "bmrt"}},
    ]
    lines = model_lines(tags, status)
    assert [line.split()[0] for line in lines] == [t["name"] for t in tags]
    assert lines[0].endswith("● loaded") and "2000 MiB / 1000 MiB free" in lines[0]
    assert lines[1].endswith("✓ fits") and lines[2].endswith("✗ does not fit")
    assert "no TPU memory" in lines[3] and lines[3].endswith("✓ fits (host)")
    assert "need unknown" in lines[4] and lines[4].endswith("? fit unknown")
    no_heaps = model_lines(tags[1:2], {"model": {"name": "big"}})
    assert "free TPU memory unknown" in no_heaps[0] and no_heaps[0].endswith("? fit unknown")


@run_async
async def test_a_switch_with_no_service_says_so_and_does_not_claim_ready(tmp_path: Path) -> None:
    app = app_for(tmp_path / "nothing.sock", 3)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.status.state == "service not running")
        app.switch_model("tiny-b")  # what picking it does (the picker itself needs the service's list)
        await until(pilot, lambda: any(e.startswith("cannot switch to tiny-b (") for e in errors(app)))
        await pilot.pause(0.3)
        assert not app.ready and app.status.state == "service not running" and app.chat.model == ""


@run_async
async def test_chat_model_option_names_the_model_of_the_opened_chat(
    two_models: InProcessService, tmp_path: Path
) -> None:
    """`llm-tpu chat --model NAME` against a running service: the chat it opens names NAME (the newest
    chat when it has no messages yet, else a new one) and its first message loads NAME on the service."""
    store = ChatStore(tmp_path / "chats.sqlite3")
    older = store.create_chat("older")
    store.add_message(older.id, "user", "kept as it was")
    app = app_for(two_models.socket, 3, store=store, model="tiny-b")
    assert app.chat.id != older.id and app.chat.model == "tiny-b"
    assert store.chat(older.id).model == ""
    async with app.run_test(size=(110, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        await send(pilot, "Hello")
        await until(pilot, lambda: len(app.history) == 2 and not app.answering, 30)
        assert loaded(two_models) == ["tiny-b"] and not errors(app)
    empty = store.create_chat("empty")  # the newest chat, no messages: reused rather than another one
    again = app_for(two_models.socket, 3, store=store, model="scripted")
    assert again.chat.id == empty.id and store.chat(empty.id).model == "scripted"
    assert len(store.chats()) == 3
