"""The chat app: conversations with the appliance's service over its Unix socket, saved between runs.

Behaviour follows oterm: answers stream in as they arrive, Enter sends, Esc stops the running answer
and keeps what came (or gives the prompt back if nothing came yet), errors become notifications and
never end the app. The service may be down, loading or restarting; a watcher polls /health and the
status line says which, so the next message works once the service is back.

Chats live in a :class:`ChatStore` (SQLite): the sidebar lists them (new, switch, rename, delete,
export to Markdown), each keeps its own system prompt and sampling parameters (F3), and every message
is saved when it is shown; an answer cut short is saved with its "(interrupted …)" note. Every action
is in the command palette (Ctrl+P); key bindings can be remapped (appliance.tui.keymap); the theme is
saved in the store.

Each chat names its model (F5, the model picker, which loads the picked model on the service and saves
it with the chat; a new chat takes the current one's). Every request names the chat's model, so going
back to a chat whose model is not loaded switches the service back to it on its next message; the
status line says "loading <model>…" meanwhile. A refusal (not installed, model.pinned, does not fit the
TPU memory) is a notification with the service's code and hint, and the chat keeps its model.

The HTTP client is httpx's async one on the app's own event loop: Esc is a plain cancel of the task
that reads the answer, which closes the connection (the service drops the request, queued or not).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, OptionList
from textual.worker import Worker

from appliance.client import AsyncServiceClient
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.generation.types import Message, Notice, TextDelta
from appliance.tui.commands import ChatCommands
from appliance.tui.screens import (
    ConfirmScreen,
    HelpScreen,
    ModelsScreen,
    ParamsScreen,
    StatusScreen,
    TextScreen,
)
from appliance.tui.store import Chat, ChatParams, ChatStore
from appliance.tui.stream import AnswerDone, AnswerFailed, stream_answer
from appliance.tui.widgets import ChatList, MessageList, MessageView, PromptInput, StatusBar

__all__ = ["ChatApp"]

T = TypeVar("T")
NEW_TITLE = "New chat"
_CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


def _title_from(prompt: str) -> str:
    first = " ".join(prompt.split())
    return first if len(first) <= 40 else first[:39].rstrip() + "…"


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "llm-tpu chat"
    COMMANDS = App.COMMANDS | {ChatCommands}
    # Function keys and Ctrl keys the prompt (a TextArea) does not use; ids are what tui.yaml remaps.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop answer", id="cancel"),
        Binding("ctrl+n", "new_conversation", "New chat", id="new_conversation", priority=True),
        Binding("f2", "rename_chat", "Rename chat", id="rename_chat"),
        Binding("f3", "edit_params", "Chat parameters", id="edit_params"),
        Binding("f4", "show_status", "Service status", id="show_status"),
        Binding("f5", "pick_model", "Models", id="pick_model", show=False),
        Binding("ctrl+r", "regenerate", "Regenerate answer", id="regenerate", priority=True, show=False),
        Binding("f8", "copy_answer", "Copy last answer", id="copy_answer", show=False),
        Binding("f9", "copy_code", "Copy last code block", id="copy_code", show=False),
        Binding(
            "ctrl+s", "export_chat", "Export chat to Markdown", id="export_chat", priority=True, show=False
        ),
        Binding("ctrl+delete", "delete_chat", "Delete chat", id="delete_chat", priority=True, show=False),
        Binding("ctrl+pagedown", "next_chat", "Next chat", id="next_chat", priority=True, show=False),
        Binding(
            "ctrl+pageup", "previous_chat", "Previous chat", id="previous_chat", priority=True, show=False
        ),
        Binding("ctrl+b", "toggle_chats", "Show/hide chat list", id="toggle_chats", show=False),
        Binding("f1", "help", "Help", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self,
        client: AsyncServiceClient,
        *,
        store: ChatStore | None = None,
        options: Mapping[str, Any] | None = None,
        system: str | None = None,
        service_label: str = "",
        retry_interval_s: float = 1.0,
        keymap: Mapping[str, str] | None = None,
        export_dir: Path | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.store = store if store is not None else ChatStore(":memory:")
        self.options = dict(options or {})  # from the command line; a chat's own parameters override them
        self.system = system  # the system prompt of new chats (--system)
        self.service_label = service_label
        self.retry_interval_s = retry_interval_s
        self.export_dir = export_dir or Path.cwd()
        self._keymap_config = dict(keymap or {})
        self.history: list[Message] = []  # full texts of both sides, what the next request sends
        self._message_ids: list[int] = []  # the store's id of each history entry
        self.chat: Chat = self._first_chat(model)
        self.ready = False
        self.service_status: dict[str, Any] = {}
        self._answer_worker: Worker[None] | None = None

    @classmethod
    def binding_ids(cls) -> list[str]:
        """Every action a key can be bound to (the app's and the prompt's): what tui.yaml may remap."""
        ids = [b.id for b in (*cls.BINDINGS, *PromptInput.BINDINGS) if isinstance(b, Binding) and b.id]
        return ids

    def action_entries(self) -> Iterator[tuple[str, str, str]]:
        """(action, description, keys) of the app's actions, keys as remapped."""
        keymap: Mapping[str, str] = getattr(self, "_keymap", {}) or {}
        for b in self.BINDINGS:
            if isinstance(b, Binding) and b.id:
                yield b.action, b.description, keymap.get(b.id, b.key)

    def _first_chat(self, model: str | None = None) -> Chat:
        """The newest chat; with ``model`` (chat --model), a chat that names it: the newest one when it
        has no messages yet, else a new one."""
        chats = self.store.chats()
        if not chats:
            return self._new_chat(model or "")
        if model is None or chats[0].model == model:
            return chats[0]
        if not self.store.messages(chats[0].id):
            return self.store.set_model(chats[0].id, model)
        return self._new_chat(model)

    def _new_chat(self, model: str) -> Chat:
        return self.store.create_chat(NEW_TITLE, ChatParams(system=self.system or ""), model)

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ChatList()
            with Vertical(id="conversation"):
                yield MessageList(id="messages")
                yield PromptInput()
        yield StatusBar()
        yield Footer()

    @property
    def messages(self) -> MessageList:
        return self.query_one(MessageList)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def chat_list(self) -> ChatList:
        return self.query_one(ChatList)

    @property
    def answering(self) -> bool:
        return self._answer_worker is not None and not self._answer_worker.is_finished

    async def on_mount(self) -> None:
        if self._keymap_config:
            self.set_keymap(self._keymap_config)
        theme = self.store.setting("theme")
        if theme and theme in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, self._save_theme)
        await self._show_chat()
        self.prompt.focus()
        self.watch_service()

    def _save_theme(self, theme: Any) -> None:
        self._saving("the theme", lambda: self.store.set_setting("theme", str(getattr(theme, "name", theme))))

    def error(self, err: ApplianceError, title: str = "error") -> None:
        self.notify(err.message + (f"\n{err.hint}" if err.hint else ""), title=title, severity="error")

    def _saving(self, what: str, write: Callable[[], T]) -> T | None:
        """A write to the store; when it fails (disk full, another process holding the file) the chat
        goes on in memory and a notification says what was not saved."""
        try:
            return write()
        except ApplianceError as err:
            self.error(err, f"{what} was not saved")
            return None

    # -- the service's state -----------------------------------------------------------------------
    @work(exclusive=True, group="health", exit_on_error=False)
    async def watch_service(self) -> None:
        """Poll /health until the service is ready; say on the status line (and once per change) why not."""
        self.ready = False
        last = ""
        while True:
            try:
                health = await self.client.health()
                state = str(health.get("status"))
                reason = ApplianceError(str(health.get("reason", state)), hint=health.get("hint"))
            except ApplianceError as err:
                state, reason = "down", err
            except ValueError as exc:  # not JSON: something else listens there
                state, reason = "down", ServiceUnavailable(f"the service did not answer: {exc}")
            if state == "ok":
                await self._connected()
                return
            if state != last:
                last = state
                if state == "loading":
                    self.status.set(state="loading model…")
                    self.notify(reason.message, title="loading model…", timeout=4)
                elif state == "failed":
                    self.status.set(state="model failed to load")
                    self.error(reason, "the service could not load its model")
                elif state == "down":
                    self.status.set(state="service not running")
                    self.error(reason, "service not running")
                else:
                    self.status.set(state=f"service {state}")
            await asyncio.sleep(self.retry_interval_s)

    async def _fetch_status(self) -> dict[str, Any]:
        try:
            self.service_status = await self.client.status()
        except (ApplianceError, ValueError):
            pass
        return self.service_status

    async def _connected(self) -> None:
        info = await self._fetch_status()
        model = info.get("model") or {}
        greedy_only = bool((model.get("sampling") or {}).get("greedy_only"))
        self.status.set(
            model=str(model.get("name") or ""),
            engine=str(model.get("engine") or "") + (" (greedy only)" if greedy_only else ""),
            state="ready",
        )
        self.ready = True

    # -- chats -------------------------------------------------------------------------------------
    async def _show_chat(self) -> None:
        """Show self.chat: its messages from the store, the sidebar, a clean status line."""
        stored = self.store.messages(self.chat.id)
        self.history = [Message(m.role, m.content) for m in stored]  # type: ignore[arg-type]
        self._message_ids = [m.id for m in stored]
        await self.messages.clear()
        for m in stored:
            view = await self.messages.add(m.role, m.content)
            view.set_note(m.note)
        self.status.finished(None, clear=True)
        self.refresh_chat_list()

    def refresh_chat_list(self) -> None:
        self.chat_list.show(self.store.chats(), self.chat.id)

    async def _stop_answer(self) -> None:
        if self._answer_worker is not None and self.answering:
            self._answer_worker.cancel()
            await self._answer_worker.wait()

    async def open_chat(self, chat_id: int) -> None:
        if chat_id == self.chat.id:
            return
        await self._stop_answer()
        self.chat = self.store.chat(chat_id)
        await self._show_chat()
        self.prompt.focus()

    @on(OptionList.OptionSelected, "#chats")
    async def _chat_selected(self, event: OptionList.OptionSelected) -> None:
        await self.open_chat(int(event.option.id or 0))

    # -- sending and streaming ---------------------------------------------------------------------
    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.answering:
            self.notify("an answer is still coming; Esc stops it", severity="warning")
            return
        self.prompt.remember(event.value)
        self.prompt.value = ""
        self._add_to_history("user", text)
        if self.chat.title == NEW_TITLE and len(self.history) == 1:
            self.chat = (
                self._saving("the title", lambda: self.store.rename(self.chat.id, _title_from(text)))
                or self.chat
            )
            self.refresh_chat_list()
        user_view = await self.messages.add("user", text)
        answer_view = await self.messages.add("assistant")
        self._answer_worker = self._answer(user_view, answer_view)

    def _add_to_history(self, role: str, text: str, note: str = "") -> None:
        self.history.append(Message(role, text))  # type: ignore[arg-type]
        stored = self._saving(
            f"the {role}'s message", lambda: self.store.add_message(self.chat.id, role, text, note)
        )
        self._message_ids.append(stored.id if stored else -1)

    def _pop_history(self) -> Message:
        message_id = self._message_ids.pop()
        if message_id >= 0:
            self._saving("removing a message", lambda: self.store.delete_message(message_id))
        return self.history.pop()

    def request_options(self) -> dict[str, Any]:
        """What the next request sends as options: the command line's, then the chat's own."""
        return {**self.options, **self.chat.params.options()}

    def _request(self) -> list[dict[str, str]]:
        system_prompt = self.chat.params.system
        system = [Message("system", system_prompt)] if system_prompt else []
        return [{"role": m.role, "content": m.content} for m in (*system, *self.history)]

    @work(exclusive=True, group="answer", exit_on_error=False)
    async def _answer(self, user_view: MessageView, answer_view: MessageView) -> None:
        """Stream one answer into its view. Esc cancels this task: the connection closes with it."""
        stream = answer_view.start_stream()
        parts: list[str] = []
        outcome: AnswerDone | AnswerFailed | None = None
        model = self.chat.model
        switching = bool(model) and model != self.status.model  # the service switches models first
        loading = switching
        self.status.answering(0)
        if loading:
            self.status.set(state=f"loading {model}…")
        try:
            async for event in stream_answer(
                self.client, self._request(), model=model, options=self.request_options()
            ):
                if loading and not isinstance(event, AnswerFailed):
                    loading = False
                    self.status.set(model=model, state="ready")
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    await stream.write(event.text)
                    self.status.answering(event.tokens or len(parts))
                elif isinstance(event, Notice):
                    self.notify(event.message, title="note")
                else:
                    outcome = event
        except asyncio.CancelledError:
            await stream.stop()
            await self._end_turn(
                user_view, answer_view, "".join(parts), None, cancelled=True, switched=switching
            )
            raise
        await stream.stop()
        await self._end_turn(
            user_view, answer_view, "".join(parts), outcome, cancelled=False, switched=switching
        )

    async def _end_turn(
        self,
        user_view: MessageView,
        answer_view: MessageView,
        answer: str,
        outcome: AnswerDone | AnswerFailed | None,
        *,
        cancelled: bool,
        switched: bool = False,
    ) -> None:
        done = outcome if isinstance(outcome, AnswerDone) else None
        failed = outcome if isinstance(outcome, AnswerFailed) else None
        self.status.finished(done.stats if done else None, clear=cancelled)
        went_away = failed is not None and isinstance(failed.error, ServiceUnavailable)
        if (switched or (done is not None and done.stats.timings.load_duration)) and not went_away:
            await self._connected()  # the service switched models for this answer (or tried to)
        if done is not None or answer:
            note = ""
            if cancelled:
                note = "(interrupted: stopped with Esc)"
            elif failed is not None:
                note = "(interrupted: the service went away)" if went_away else "(interrupted)"
            elif done is not None and done.stats.done_reason in ("length", "context"):
                note = f"(cut short: {done.stats.done_reason})"
            self._add_to_history("assistant", answer, note)
            answer_view.set_note(note)
            if done is not None and done.final.dropped_turns:
                self.notify(
                    f"{done.final.dropped_turns} earlier turn(s) were left out of the model's view to fit "
                    "its context; they stay in this chat",
                    title="history trimmed",
                    severity="warning",
                )
        else:
            # Nothing came back: the message did not happen. Give its text back to the prompt.
            prompt = self._pop_history().content
            await user_view.remove()
            await answer_view.remove()
            if not self.prompt.value:
                self.prompt.value = prompt
        if failed is not None:
            refused_switch = switched and not failed.mid_stream
            code = failed.error.code
            self.error(
                failed.error, f"cannot switch to {self.chat.model} ({code})" if refused_switch else "error"
            )
            if isinstance(failed.error, ServiceUnavailable):
                self.watch_service()

    # -- actions -------------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if self._answer_worker is not None and self.answering:
            self._answer_worker.cancel()

    async def action_new_conversation(self) -> None:
        await self._stop_answer()
        if self.history or self.chat.title != NEW_TITLE:
            model = self.chat.model
            new = self._saving("the new chat", lambda: self._new_chat(model))
            if new is None:
                return
            self.chat = new
        await self._show_chat()
        self.prompt.focus()
        self.notify("new chat", timeout=2)

    async def _step_chat(self, step: int) -> None:
        ids = [c.id for c in self.store.chats()]
        if len(ids) > 1:
            await self.open_chat(ids[(ids.index(self.chat.id) + step) % len(ids)])

    async def action_next_chat(self) -> None:
        await self._step_chat(1)

    async def action_previous_chat(self) -> None:
        await self._step_chat(-1)

    def action_toggle_chats(self) -> None:
        self.chat_list.display = not self.chat_list.display

    def action_rename_chat(self) -> None:
        def rename(title: str | None) -> None:
            if title is None:
                return
            try:
                self.chat = self.store.rename(self.chat.id, title)
            except ApplianceError as err:
                self.error(err, "cannot rename")
                return
            self.refresh_chat_list()

        self.push_screen(TextScreen("New title of this chat:", self.chat.title), rename)

    def action_delete_chat(self) -> None:
        async def delete(yes: bool | None) -> None:
            if not yes:
                return
            await self._stop_answer()
            gone = self.chat
            try:
                self.store.delete_chat(gone.id)
                chats = self.store.chats()
                self.chat = chats[0] if chats else self._new_chat(gone.model)
            except ApplianceError as err:
                self.error(err, "the chat was not deleted")
                return
            await self._show_chat()
            self.notify(f"deleted “{gone.title}”", timeout=3)

        question = (
            f"Delete “{self.chat.title}” and its {len(self.history)} message(s)? This cannot be undone."
        )
        self.push_screen(ConfirmScreen(question, "Delete"), delete)

    def action_export_chat(self) -> None:
        try:
            path = self.store.export_markdown(self.chat.id, self.export_dir)
        except ApplianceError as err:
            self.error(err, "export failed")
            return
        self.notify(f"saved to {path}", title="exported")

    def action_edit_params(self) -> None:
        def save(params: ChatParams | None) -> None:
            if params is None:
                return
            saved = self._saving("the parameters", lambda: self.store.set_params(self.chat.id, params))
            # Unsaved, they still apply to this chat until the app ends.
            self.chat = saved or dataclasses.replace(self.chat, params=params)
            if saved:
                self.notify("used from the next message on", title="parameters saved", timeout=3)

        greedy_only = bool(
            ((self.service_status.get("model") or {}).get("sampling") or {}).get("greedy_only")
        )
        self.push_screen(ParamsScreen(self.chat.title, self.chat.params, greedy_only), save)

    async def action_regenerate(self) -> None:
        if self.answering:
            self.notify("an answer is still coming; Esc stops it", severity="warning")
            return
        if len(self.history) < 2 or self.history[-1].role != "assistant":
            self.notify("there is no answer to regenerate yet", severity="warning")
            return
        self._pop_history()
        views = self.messages.views
        await views[-1].remove()
        answer_view = await self.messages.add("assistant")
        self._answer_worker = self._answer(views[-2], answer_view)

    def _copy(self, text: str, what: str) -> None:
        self.copy_to_clipboard(text)
        self.notify(f"{what} copied ({len(text)} characters)", timeout=2)

    def action_copy_answer(self) -> None:
        answers = [m.content for m in self.history if m.role == "assistant"]
        if not answers:
            self.notify("no answer to copy yet", severity="warning")
            return
        self._copy(answers[-1], "answer")

    def action_copy_code(self) -> None:
        for message in reversed(self.history):
            blocks = _CODE_BLOCK.findall(message.content)
            if blocks:
                self._copy(blocks[-1], "code block")
                return
        self.notify("no code block in this chat", severity="warning")

    def on_message_view_copy_requested(self, event: MessageView.CopyRequested) -> None:
        self._copy(event.text, "message")

    async def action_show_status(self) -> None:
        status = await self._fetch_status()
        if not status:
            self.notify("the service did not answer; see the status line", severity="warning")
            return
        stats = self.status.stats
        used = stats.timings.prompt_tokens + stats.eval_count if stats is not None else None
        self.push_screen(StatusScreen(status, used))

    async def action_pick_model(self) -> None:
        try:
            models = await self.client.tags()
        except ApplianceError as err:
            self.error(err, "cannot list models")
            return
        status = await self._fetch_status()

        def picked(name: str | None) -> None:
            if name is not None:
                self.switch_model(name)

        self.push_screen(ModelsScreen(models, status, self.chat.model), picked)

    @work(exclusive=True, group="switch", exit_on_error=False)
    async def switch_model(self, name: str) -> None:
        """Load ``name`` on the service and make it this chat's model; on a refusal the chat keeps its own."""
        chat_id = self.chat.id
        self.status.set(state=f"loading {name}…")
        try:
            await self.client.load(name)
        except ApplianceError as err:
            self.error(err, f"cannot switch to {name} ({err.code})")
            if isinstance(err, ServiceUnavailable):
                self.watch_service()  # the status line says why until it is back
            else:
                await self._connected()  # it refused before unloading: the previous model is still there
            return
        saved = self._saving("the chat's model", lambda: self.store.set_model(chat_id, name))
        if self.chat.id == chat_id:
            self.chat = saved or dataclasses.replace(self.chat, model=name)
        await self._connected()
        self.notify(f"{name} is loaded and answers this chat", title="model switched", timeout=3)

    def action_help(self) -> None:
        keys = [(keys, description) for _, description, keys in self.action_entries()]
        keymap: Mapping[str, str] = getattr(self, "_keymap", {}) or {}
        for b in PromptInput.BINDINGS:
            if isinstance(b, Binding) and b.id:
                keys.append((keymap.get(b.id, b.key), b.description))
        self.push_screen(HelpScreen(keys, self.service_label))
