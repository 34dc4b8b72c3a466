"""The chat store: a real SQLite file, migrated from its first schema to the latest, and its errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.errors import ConfigError, InvalidRequest
from appliance.tui.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChatParams,
    ChatStore,
    default_path,
    migrate,
    params_from_form,
)


def test_default_path_follows_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "llm-tpu" / "chats.sqlite3"


def test_a_version_1_file_is_migrated_to_the_latest_and_keeps_its_chats(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, target=1) == 1
    db.execute("INSERT INTO chats (title, system, created, updated) VALUES ('old', 'be brief', 1, 2)")
    db.execute("INSERT INTO messages (chat_id, role, content, created) VALUES (1, 'user', 'hi', 1)")
    db.close()

    store = ChatStore(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    (chat,) = store.chats()
    assert chat.title == "old" and chat.params == ChatParams(system="be brief")
    assert chat.model == ""  # v4: an old chat names no model, the service's configured one answers it
    assert store.set_model(chat.id, "tiny-b").model == "tiny-b"
    (msg,) = store.messages(chat.id)
    assert (msg.role, msg.content, msg.note) == ("user", "hi", "")
    store.set_setting("theme", "nord")  # v3's table exists
    store.close()
    reopened = ChatStore(path)
    assert reopened.setting("theme") == "nord"  # reopening applies nothing twice
    assert reopened.chat(chat.id).model == "tiny-b"


def test_a_failed_migration_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = sqlite3.connect(tmp_path / "c.sqlite3", isolation_level=None)
    migrate(db, target=1)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE chats ADD COLUMN params TEXT NOT NULL DEFAULT '{}'")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr("appliance.tui.store.MIGRATIONS", (MIGRATIONS[0], broken, MIGRATIONS[2]))
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, target=2)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    columns = [r[1] for r in db.execute("PRAGMA table_info(chats)")]
    assert "params" not in columns  # the half-done step was rolled back


def test_a_newer_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="newer than this llm-tpu knows") as err:
        ChatStore(path)
    assert err.value.hint and "upgrade" in err.value.hint


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_text("hello, I am not SQLite\n" * 100)
    with pytest.raises(ConfigError, match="cannot open the chat store"):
        ChatStore(path)


def test_chats_messages_params_rename_delete_and_export(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "c.sqlite3")
    a = store.create_chat("First")
    b = store.create_chat("Second", ChatParams(system="pirate", temperature=0.2, max_tokens=9))
    store.add_message(a.id, "user", "Hello")
    store.add_message(a.id, "assistant", "Hi ```py\nx = 1\n```", note="(interrupted)")
    assert [c.id for c in store.chats()] == [a.id, b.id]  # the one used last comes first
    assert store.chat(b.id).params.options() == {"temperature": 0.2, "num_predict": 9}
    assert store.rename(a.id, "  Renamed \n chat ").title == "Renamed chat"
    with pytest.raises(InvalidRequest, match="cannot be empty"):
        store.rename(a.id, "  ")
    path = store.export_markdown(a.id, tmp_path / "out")
    text = path.read_text()
    assert path.name == f"renamed-chat-{a.id}.md"
    assert "# Renamed chat" in text and "## You\n\nHello" in text and "_(interrupted)_" in text
    store.delete_chat(a.id)
    assert [c.id for c in store.chats()] == [b.id] and store.messages(a.id) == []


def test_greedy_overrides_sampling_and_bad_values_name_the_field() -> None:
    greedy = ChatParams(temperature=0.9, greedy=True, max_tokens=5).options()
    assert greedy == {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repeat_penalty": 1.0, "num_predict": 5}
    assert ChatParams().options() == {}  # the service's (the model's) defaults apply
    with pytest.raises(InvalidRequest, match="top p: 'lots' is not a number"):
        params_from_form({"top_p": "lots"}, greedy=False)
    with pytest.raises(InvalidRequest, match="top_p must be in"):
        params_from_form({"top_p": "2"}, greedy=False)
    assert params_from_form({"system": " hi ", "top_k": "40"}, greedy=False) == ChatParams(
        system="hi", top_k=40
    )
