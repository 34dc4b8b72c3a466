"""Saved chats in the TUI, driven with Pilot against the real service (scripted engine, temp socket):
persistence across restarts, the chat list (new, switch, rename, delete, export), the parameters modal
reaching the service, regenerate, copy, multi-line paste, the status panel, the model picker, the
command palette, remapped keys and the saved theme."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_board import FakeBoard, Heaps
from support.service import InProcessService, in_process
from support.tui_pilot import answer_views, app_for, errors, notes, run_async, send, until
from textual import events
from textual.widgets import Input, OptionList, Switch, TextArea

from appliance.errors import ConfigError
from appliance.generation.types import Message
from appliance.tui import ChatApp, ChatStore, load_keymap
from appliance.tui.screens import ConfirmScreen, ModelsScreen, ParamsScreen, StatusScreen, TextScreen
from appliance.tui.store import ChatParams
from provisioning.board import tpu_status

SCRIPT = "Here you go. "


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    root = tmp_path_factory.mktemp("tui-chats")
    board = FakeBoard(root / "board", Heaps(npu=3072, vpu=2048, vpp=3072))
    board.set_heaps(Heaps(npu=3072, vpu=2048, vpp=3072), used_mib=100)
    probe = functools.partial(tpu_status, board.root)
    with in_process(root, device_probe=probe, model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


def prompt_seen(service: InProcessService) -> str:
    """The text of the last prompt the engine prefilled (the whole conversation, template included)."""
    model = service.runner.state.model
    assert model is not None
    return str(model.generator.tokenizer.decode(service.engine.cache))  # type: ignore[attr-defined]


@run_async
async def test_chats_survive_a_restart_with_their_notes_and_titles(
    service: InProcessService, tmp_path: Path
) -> None:
    path = tmp_path / "chats.sqlite3"
    app = app_for(service.socket, 6, store=ChatStore(path))
    service.engine.step_delay_s = 0.03
    try:
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.ready)
            await send(pilot, "First question")
            await until(pilot, lambda: len(app.history) == 2)
            app.options["num_predict"] = 100000
            await send(pilot, "Go on forever")
            await until(pilot, lambda: (app.status.streamed_tokens or 0) >= 3)
            await pilot.press("escape")
            await until(pilot, lambda: not app.answering)
            assert app.status.stats is None  # Esc clears the last answer's figures
            first_id = app.chat.id
    finally:
        service.engine.step_delay_s = 0.0
    app.store.close()

    again = app_for(service.socket, 6, store=ChatStore(path))
    async with again.run_test() as pilot:
        await until(pilot, lambda: again.ready)
        assert (
            again.chat.id == first_id and again.chat.title == "First question"
        )  # named after its first line
        assert [m.content for m in again.history[:3]] == [
            "First question",
            app.history[1].content,
            "Go on forever",
        ]
        views = answer_views(again)
        assert len(views) == 2 and views[1].text == app.history[3].content
        assert str(views[1].note.render()) == "(interrupted: stopped with Esc)"
        assert again.chat_list.chat_ids == [first_id]
        # The restored conversation is what the next request sends.
        await send(pilot, "And now?")
        await until(pilot, lambda: len(again.history) == 6)
        assert "Go on forever" in prompt_seen(service) and not errors(again)


@run_async
async def test_new_switch_rename_export_and_delete_with_confirmation(
    service: InProcessService, tmp_path: Path
) -> None:
    app = app_for(service.socket, 4, store=ChatStore(tmp_path / "c.sqlite3"), export_dir=tmp_path / "out")
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ready)
        await send(pilot, "About cats")
        await until(pilot, lambda: len(app.history) == 2)
        cats = app.chat.id
        await pilot.press("ctrl+n")
        assert app.history == [] and app.messages.views == [] and app.chat.id != cats
        await send(pilot, "About dogs")
        await until(pilot, lambda: len(app.history) == 2)
        dogs = app.chat.id
        assert app.chat_list.chat_ids == [dogs, cats]
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+n")  # an empty new chat is reused, not piled up
        assert len(app.store.chats()) == 3

        # Switch through the list: select "About cats".
        app.chat_list.focus()
        app.chat_list.highlighted = app.chat_list.chat_ids.index(cats)
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.id == cats)
        assert app.history[0].content == "About cats"

        await pilot.press("f2")
        assert isinstance(app.screen, TextScreen)
        app.screen.query_one(Input).value = "Feline facts"
        await pilot.press("enter")
        await until(pilot, lambda: app.store.chat(cats).title == "Feline facts")
        assert "Feline facts" in [str(o.prompt) for o in app.chat_list.options]

        await pilot.press("ctrl+s")
        exported = tmp_path / "out" / f"feline-facts-{cats}.md"
        assert exported.exists() and "## You\n\nAbout cats" in exported.read_text()
        assert any(str(exported) in n for n in notes(app))  # the path is in the notification

        await pilot.press("ctrl+delete")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")  # No: nothing is deleted
        assert app.store.chat(cats).title == "Feline facts"
        await pilot.press("ctrl+delete")
        await pilot.click("#yes")
        await until(pilot, lambda: app.chat.id != cats)
        assert cats not in [c.id for c in app.store.chats()] and app.store.messages(cats) == []
        assert cats not in app.chat_list.chat_ids
        assert not errors(app)


@run_async
async def test_the_parameters_modal_changes_the_next_request(
    service: InProcessService, tmp_path: Path
) -> None:
    app = app_for(service.socket, 4, store=ChatStore(tmp_path / "c.sqlite3"))
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        await send(pilot, "Hello")
        await until(pilot, lambda: len(app.history) == 2)
        assert "Arr" not in prompt_seen(service)
        await pilot.press("f3")
        assert isinstance(app.screen, ParamsScreen)
        screen = app.screen
        screen.query_one("#system", TextArea).text = "Arr, speak like a pirate."
        screen.query_one("#max_tokens", Input).value = "3"
        screen.query_one("#top_p", Input).value = "2"  # out of range: named, the dialog stays
        await pilot.click("#save")
        assert app.screen is screen and "top_p must be in (0, 1]" in str(
            screen.query_one("#problem").render()
        )
        screen.query_one("#top_p", Input).value = ""
        screen.query_one("#greedy", Switch).value = True
        await pilot.click("#save")
        await until(pilot, lambda: not isinstance(app.screen, ParamsScreen))
        assert app.store.chat(app.chat.id).params == ChatParams(
            system="Arr, speak like a pirate.", max_tokens=3, greedy=True
        )
        await send(pilot, "Who are you?")
        await until(pilot, lambda: len(app.history) == 4)
        seen = prompt_seen(service)
        assert seen.index("Arr, speak like a pirate.") < seen.index("Hello")  # the system prompt went first
        assert "3 tokens" in app.status.line  # max tokens reached the service
        assert app.request_options()["temperature"] == 0.0  # greedy


@run_async
async def test_regenerate_copy_and_a_multi_line_paste(service: InProcessService, tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "c.sqlite3")
    chat = store.create_chat("Code")
    store.add_message(chat.id, "user", "Show code")
    store.add_message(chat.id, "assistant", "Sure:\n```python\nprint('hi')\n```\nand\n```sh\nls -l\n```\n")
    app = app_for(service.socket, 5, store=store)
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        await pilot.press("f9")
        assert app.clipboard == "ls -l\n"  # the last code block
        await pilot.press("f8")
        assert app.clipboard.startswith("Sure:\n```python")

        app.prompt.focus()
        app.post_message(events.Paste("line one\nline two\n\nline four"))  # as the terminal driver does
        await until(pilot, lambda: "line four" in app.prompt.value)
        await pilot.press("enter")
        await until(pilot, lambda: len(app.history) == 4)
        assert app.history[2] == Message("user", "line one\nline two\n\nline four")
        answer = app.history[3].content
        prefills = service.engine.prefill_calls

        await pilot.press("ctrl+r")
        await until(pilot, lambda: not app.answering and service.engine.prefill_calls > prefills)
        await until(pilot, lambda: len(app.history) == 4)
        assert app.history[3].content == answer and len(answer_views(app)) == 2  # replaced, not added
        assert [m.role for m in app.store.messages(chat.id)] == ["user", "assistant"] * 2

        await pilot.click(answer_views(app)[0], times=2)  # double click copies that message
        assert app.clipboard.startswith("Sure:")
        assert not errors(app)


@run_async
async def test_status_panel_and_model_picker(service: InProcessService, tmp_path: Path) -> None:
    app = app_for(service.socket, 4, store=ChatStore(tmp_path / "c.sqlite3"))
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        text = "\n".join(app.screen.lines)  # type: ignore[attr-defined]
        assert "SEQLEN     4096 tokens" in text and "known after the next answer" in text
        assert "npu      100 MiB used of 3072 MiB" in text and "queue      0 running" in text
        await pilot.press("escape")
        await send(pilot, "Hi")
        await until(pilot, lambda: len(app.history) == 2)
        stats = app.status.stats
        assert stats is not None
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        used = stats.timings.prompt_tokens + stats.eval_count
        assert f"this chat  {used} of 4096 tokens" in "\n".join(app.screen.lines)  # type: ignore[attr-defined]
        await pilot.press("escape")

        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        (line,) = app.screen.lines  # type: ignore[attr-defined]
        assert "● loaded" in line and "2972 MiB free" in line
        app.screen.query_one(OptionList).focus()
        await pilot.press("enter")  # picking the loaded model: this chat names it from now on
        await until(pilot, lambda: app.chat.model == "scripted" and not app.screen.is_modal)
        assert app.store.chat(app.chat.id).model == "scripted" and not errors(app)


@run_async
async def test_palette_keymap_help_and_theme(service: InProcessService, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    app = app_for(
        service.socket, 4, store=ChatStore(path), keymap={"copy_answer": "f12"}, export_dir=tmp_path
    )
    async with app.run_test(size=(100, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        await send(pilot, "Hi")
        await until(pilot, lambda: len(app.history) == 2)
        await pilot.press("f12")  # remapped
        assert app.clipboard == app.history[1].content
        await pilot.press("ctrl+p")
        await pilot.press(*"export chat")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: any(p.suffix == ".md" for p in tmp_path.iterdir()))
        await pilot.press("f1")
        help_text = "\n".join(str(s.render()) for s in app.screen.query(".keys"))
        assert re.search(r"\bf12  Copy last answer", help_text) and "Regenerate answer" in help_text
        await pilot.press("escape")
        app.theme = "nord"
        await pilot.pause()
    app.store.close()
    again = app_for(service.socket, 4, store=ChatStore(path))
    async with again.run_test() as pilot:
        assert again.theme == "nord"


def test_keymap_file_errors_say_what_and_where(tmp_path: Path) -> None:
    path = tmp_path / "tui.yaml"
    actions = ChatApp.binding_ids()
    assert load_keymap(path, actions) == {}  # no file: the built-in keys
    path.write_text("keys:\n  regenerate: ctrl+g, F6\n  send: ctrl+enter\n")
    assert load_keymap(path, actions) == {"regenerate": "ctrl+g,f6", "send": "ctrl+enter"}
    cases = {
        "keys:\n  regenrate: ctrl+g\n": "unknown action 'regenrate'",
        "keys:\n  regenerate: ctrl+nope\n": "unknown key 'nope'",
        "keys:\n  regenerate: hyperctrl+g\n": "unknown modifier 'hyperctrl'",
        "keys:\n  regenerate: 5\n": "give the key as a string",
        "colors: {}\n": "unknown section 'colors'",
        "keys: [\n": "is not valid YAML",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as err:
            load_keymap(path, actions)
        assert str(path) in err.value.message
    path.write_text("keys:\n  regenrate: ctrl+g\n")
    with pytest.raises(ConfigError) as err:
        load_keymap(path, actions)
    assert err.value.hint and "regenerate" in err.value.hint  # the hint lists the real ids


@run_async
async def test_a_notice_when_old_turns_were_left_out_to_fit(
    service: InProcessService, tmp_path: Path
) -> None:
    store = ChatStore(tmp_path / "c.sqlite3")
    chat = store.create_chat("Long")
    long_text = "apple banana cherry " * 700  # thousands of tokens: two turns exceed the 4096 context
    for _ in range(2):
        store.add_message(chat.id, "user", long_text)
        store.add_message(chat.id, "assistant", long_text)
    app = app_for(service.socket, 4, store=store)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ready)
        await send(pilot, "Summary?")
        await until(pilot, lambda: len(app.history) == 6)
        assert any(n.startswith("history trimmed: ") and "left out" in n for n in notes(app))
        assert len(app.store.messages(chat.id)) == 6  # the chat itself keeps everything


@run_async
async def test_a_store_another_process_holds_is_a_notice_and_the_chat_goes_on(
    service: InProcessService, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite3"
    app = app_for(service.socket, 4, store=ChatStore(path, busy_timeout_s=0.1))
    holder = sqlite3.connect(path, isolation_level=None)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ready)
        holder.execute("BEGIN IMMEDIATE")  # another llm-tpu chat in the middle of a write
        await send(pilot, "Hello")
        await until(pilot, lambda: len(app.history) == 2)
        assert any("was not saved" in e and "database is locked" in e for e in errors(app))
        assert app.is_running and app.history[1].content  # answered anyway, kept in memory
        holder.execute("ROLLBACK")
        await send(pilot, "Again")
        await until(pilot, lambda: len(app.history) == 4)
        assert [m.content for m in app.store.messages(app.chat.id)] == ["Again", app.history[3].content]
