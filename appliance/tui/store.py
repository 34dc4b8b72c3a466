"""The chat app's saved chats: one SQLite file, its schema moved forward by numbered migrations.

A chat has its own title, system prompt and sampling parameters (:class:`ChatParams`), the model it
talks to (empty: the service's configured model), its messages
and its created/updated times. An answer cut short (Esc, the service going away) is stored with its
note, e.g. "(interrupted)". Settings the app keeps between runs (the theme) live here too.

The file is ``$XDG_DATA_HOME/llm-tpu/chats.sqlite3`` (:func:`default_path`). Its schema version is
SQLite's ``PRAGMA user_version``; :data:`MIGRATIONS` are applied in order, each in one transaction, to
reach :data:`SCHEMA_VERSION`. A file written by a newer version is refused with a clear error rather
than changed. No Textual here: the widgets use this module, not the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, ConfigError, InvalidRequest
from appliance.generation.types import GenerationOptions, ollama_options
from appliance.paths import user_data_dir

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Chat",
    "ChatParams",
    "ChatStore",
    "StoredMessage",
    "chat_markdown",
    "default_path",
    "migrate",
    "params_from_form",
]


def default_path() -> Path:
    return user_data_dir() / "chats.sqlite3"


@dataclass(frozen=True)
class ChatParams:
    """A chat's system prompt and sampling parameters; None leaves a value to the service's default."""

    system: str = ""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    max_tokens: int | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        self.checked()

    def checked(self) -> GenerationOptions:
        """The values as GenerationOptions (raises InvalidRequest naming a bad value)."""
        fields: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repeat_penalty,
            "max_new_tokens": self.max_tokens,
        }
        return GenerationOptions(**{k: v for k, v in fields.items() if v is not None})

    def options(self) -> dict[str, Any]:
        """The Ollama options a request of this chat sends (greedy overrides the sampling values)."""
        given = self.checked()
        values: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repeat_penalty,
            "max_new_tokens": self.max_tokens,
        }
        if self.greedy:
            g = given.greedy()
            values.update(
                temperature=g.temperature,
                top_k=g.top_k,
                top_p=g.top_p,
                repetition_penalty=g.repetition_penalty,
            )
        return ollama_options(values)

    def to_json(self) -> str:
        return json.dumps(
            {k: v for k, v in dataclasses.asdict(self).items() if k != "system"}, sort_keys=True
        )

    @classmethod
    def from_row(cls, system: str, params_json: str) -> ChatParams:
        raw = json.loads(params_json or "{}")
        known = {f.name for f in dataclasses.fields(cls)} - {"system"}
        try:
            return cls(system=system, **{k: v for k, v in raw.items() if k in known})
        except InvalidRequest:  # saved by hand or by an older rule: keep the chat, drop its values
            return cls(system=system)


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    params: ChatParams
    created: float
    updated: float
    model: str = ""  # the installed model this chat's requests name; "" is the service's configured one


@dataclass(frozen=True)
class StoredMessage:
    id: int
    chat_id: int
    role: str
    content: str
    note: str = ""  # "(stopped)", "(interrupted)", ... shown under the message


# -- migrations: version N is reached by MIGRATIONS[N - 1]. Never edit one that has shipped; add one. --


def _v1_chats_and_messages(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE chats (id INTEGER PRIMARY KEY, title TEXT NOT NULL, system TEXT NOT NULL DEFAULT '',"
        " created REAL NOT NULL, updated REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY,"
        " chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,"
        " role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL)"
    )
    db.execute("CREATE INDEX messages_by_chat ON messages (chat_id, id)")


def _v2_params_and_notes(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE chats ADD COLUMN params TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE messages ADD COLUMN note TEXT NOT NULL DEFAULT ''")


def _v3_settings(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _v4_chat_model(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE chats ADD COLUMN model TEXT NOT NULL DEFAULT ''")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_chats_and_messages,
    _v2_params_and_notes,
    _v3_settings,
    _v4_chat_model,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations after the file's version up to ``target``; returns the version reached."""
    current = _version(db)
    if current > SCHEMA_VERSION:
        raise ConfigError(
            f"the chat store is at schema version {current}, newer than this llm-tpu knows ({SCHEMA_VERSION})",
            hint="upgrade llm-tpu, or move the file away to start with an empty chat list",
        )
    for number in range(current + 1, target + 1):
        with _transaction(db):  # one per step: a failed step leaves the previous version intact
            MIGRATIONS[number - 1](db)
            db.execute(f"PRAGMA user_version = {number}")
    return _version(db)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN .. COMMIT (ROLLBACK on an error) on a connection in autocommit mode; DDL included."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def chat_markdown(chat: Chat, messages: list[StoredMessage]) -> str:
    """A chat as a Markdown document: title, system prompt, then each message under its speaker."""
    lines = [f"# {chat.title}", ""]
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.created))
    lines += [f"_{stamp}_", ""]
    if chat.params.system:
        lines += ["## System", "", chat.params.system, ""]
    for m in messages:
        lines += ["## " + ("You" if m.role == "user" else m.role.capitalize()), "", m.content]
        if m.note:
            lines += ["", f"_{m.note}_"]
        lines.append("")
    return "\n".join(lines)


class ChatStore:
    """The saved chats; every change is committed at once (a crash loses nothing already shown)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":  # a throwaway store (benchmarks, tests)
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (_transaction), schema changes included
            self._db = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_s)
            self._db.execute("PRAGMA foreign_keys = ON")
            migrate(self._db)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the chat store {self.path}: {exc}",
                hint="check that the file is a SQLite database you can write, or move it away",
            ) from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with _transaction(self._db) as db:
                yield db
        except sqlite3.Error as exc:
            raise ApplianceError(f"the chat store {self.path} failed: {exc}") from None

    # -- chats --
    def create_chat(self, title: str = "New chat", params: ChatParams | None = None, model: str = "") -> Chat:
        params = params or ChatParams()
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO chats (title, system, params, model, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (title, params.system, params.to_json(), model, now, now),
            )
        return Chat(int(cur.lastrowid or 0), title, params, now, now, model)

    _COLUMNS = "id, title, system, params, created, updated, model"

    def _chat(self, row: tuple[Any, ...]) -> Chat:
        chat_id, title, system, params, created, updated, model = row
        return Chat(
            int(chat_id),
            str(title),
            ChatParams.from_row(system, params),
            float(created),
            float(updated),
            str(model),
        )

    def chats(self) -> list[Chat]:
        """All chats, the most recently used first."""
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM chats ORDER BY updated DESC, id DESC")
        return [self._chat(r) for r in rows]

    def chat(self, chat_id: int) -> Chat:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM chats WHERE id = ?", (chat_id,)).fetchone()
        if row is None:
            raise InvalidRequest(f"no chat with id {chat_id}")
        return self._chat(row)

    def rename(self, chat_id: int, title: str) -> Chat:
        title = " ".join(title.split())
        if not title:
            raise InvalidRequest("a chat's title cannot be empty")
        with self._tx() as db:
            db.execute("UPDATE chats SET title = ?, updated = ? WHERE id = ?", (title, time.time(), chat_id))
        return self.chat(chat_id)

    def set_params(self, chat_id: int, params: ChatParams) -> Chat:
        with self._tx() as db:
            db.execute(
                "UPDATE chats SET system = ?, params = ?, updated = ? WHERE id = ?",
                (params.system, params.to_json(), time.time(), chat_id),
            )
        return self.chat(chat_id)

    def set_model(self, chat_id: int, model: str) -> Chat:
        """The model this chat's next requests name (the row's updated time stays: not a new message)."""
        with self._tx() as db:
            db.execute("UPDATE chats SET model = ? WHERE id = ?", (model, chat_id))
        return self.chat(chat_id)

    def delete_chat(self, chat_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    # -- messages --
    def messages(self, chat_id: int) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT id, chat_id, role, content, note FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [StoredMessage(int(i), int(c), str(r), str(t), str(n)) for i, c, r, t, n in rows]

    def add_message(self, chat_id: int, role: str, content: str, note: str = "") -> StoredMessage:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO messages (chat_id, role, content, note, created) VALUES (?, ?, ?, ?, ?)",
                (chat_id, role, content, note, now),
            )
            db.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id))
        return StoredMessage(int(cur.lastrowid or 0), chat_id, role, content, note)

    def delete_message(self, message_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    # -- settings --
    def setting(self, key: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def export_markdown(self, chat_id: int, directory: Path) -> Path:
        """Write the chat to ``directory``/<title>-<id>.md; returns the path."""
        chat = self.chat(chat_id)
        slug = "".join(c if c.isalnum() else "-" for c in chat.title.lower()).strip("-")[:40] or "chat"
        path = directory / f"{slug}-{chat.id}.md"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(chat_markdown(chat, self.messages(chat_id)), encoding="utf-8")
        except OSError as exc:
            raise ApplianceError(
                f"cannot write {path}: {exc.strerror or exc}", hint="check the directory's permissions"
            ) from None
        return path


def params_from_form(values: Mapping[str, str], greedy: bool) -> ChatParams:
    """ChatParams from the modal's text fields (empty = the service's default); bad input raises
    InvalidRequest naming the field."""
    parsed: dict[str, Any] = {}
    kinds: dict[str, type] = {
        "temperature": float,
        "top_p": float,
        "top_k": int,
        "repeat_penalty": float,
        "max_tokens": int,
    }
    for name, kind in kinds.items():
        text = values.get(name, "").strip()
        if not text:
            continue
        try:
            parsed[name] = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise InvalidRequest(f"{name.replace('_', ' ')}: {text!r} is not {what}") from None
    return ChatParams(system=values.get("system", "").strip(), greedy=greedy, **parsed)
