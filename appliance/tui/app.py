"""The chat app: a conversation with the appliance's service over its Unix socket.

Behaviour follows oterm: answers stream in as they arrive, Enter sends, Esc stops the running answer
and keeps what came (or gives the prompt back if nothing came yet), Ctrl+N starts over, errors become
notifications and never end the app. The service may be down, loading or restarting; a watcher polls
/health and the status line says which, so the next message works once the service is back.

The HTTP client is httpx's async one on the app's own event loop: Esc is a plain cancel of the task
that reads the answer, which closes the connection (the service drops the request, queued or not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer
from textual.worker import Worker

from appliance.client import AsyncServiceClient
from appliance.errors import ApplianceError, ServiceUnavailable
from appliance.generation.types import Message, Notice, TextDelta
from appliance.tui.screens import HelpScreen
from appliance.tui.stream import AnswerDone, AnswerFailed, stream_answer
from appliance.tui.widgets import MessageList, MessageView, PromptInput, StatusBar

__all__ = ["ChatApp"]


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "llm-tpu chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop answer", id="cancel"),
        Binding("ctrl+n", "new_conversation", "New chat", id="new_conversation"),
        Binding("f1", "help", "Help", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self,
        client: AsyncServiceClient,
        *,
        options: Mapping[str, Any] | None = None,
        system: str | None = None,
        service_label: str = "",
        retry_interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.client = client
        self.options = dict(options or {})  # Ollama options; the service's defaults fill in the rest
        self.system = system
        self.service_label = service_label
        self.retry_interval_s = retry_interval_s
        self.history: list[Message] = []  # full texts of both sides, what the next request sends
        self.ready = False
        self._answer_worker: Worker[None] | None = None

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
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
    def answering(self) -> bool:
        return self._answer_worker is not None and not self._answer_worker.is_finished

    def on_mount(self) -> None:
        self.prompt.focus()
        self.watch_service()

    def error(self, err: ApplianceError, title: str = "error") -> None:
        self.notify(err.message + (f"\n{err.hint}" if err.hint else ""), title=title, severity="error")

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

    async def _connected(self) -> None:
        try:
            info = await self.client.status()
        except (ApplianceError, ValueError):
            info = {}
        model = info.get("model") or {}
        greedy_only = bool((model.get("sampling") or {}).get("greedy_only"))
        self.status.set(
            model=str(model.get("name") or ""),
            engine=str(model.get("engine") or "") + (" (greedy only)" if greedy_only else ""),
            state="ready",
        )
        self.ready = True

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
        self.history.append(Message("user", text))
        user_view = await self.messages.add("user", text)
        answer_view = await self.messages.add("assistant")
        self._answer_worker = self._answer(user_view, answer_view)

    def _request(self) -> list[dict[str, str]]:
        system = [Message("system", self.system)] if self.system else []
        return [{"role": m.role, "content": m.content} for m in (*system, *self.history)]

    @work(exclusive=True, group="answer", exit_on_error=False)
    async def _answer(self, user_view: MessageView, answer_view: MessageView) -> None:
        """Stream one answer into its view. Esc cancels this task: the connection closes with it."""
        stream = answer_view.start_stream()
        parts: list[str] = []
        outcome: AnswerDone | AnswerFailed | None = None
        self.status.answering(0)
        try:
            async for event in stream_answer(self.client, self._request(), options=self.options):
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
            await self._end_turn(user_view, answer_view, "".join(parts), None, cancelled=True)
            raise
        await stream.stop()
        await self._end_turn(user_view, answer_view, "".join(parts), outcome, cancelled=False)

    async def _end_turn(
        self,
        user_view: MessageView,
        answer_view: MessageView,
        answer: str,
        outcome: AnswerDone | AnswerFailed | None,
        *,
        cancelled: bool,
    ) -> None:
        done = outcome if isinstance(outcome, AnswerDone) else None
        failed = outcome if isinstance(outcome, AnswerFailed) else None
        self.status.finished(done.stats if done else None)
        if done is not None or answer:
            self.history.append(Message("assistant", answer))
            if cancelled:
                answer_view.set_note("(stopped)")
            elif failed is not None:
                answer_view.set_note(f"(interrupted: {failed.error.message})")
            elif done is not None and done.stats.done_reason in ("length", "context"):
                answer_view.set_note(f"(cut short: {done.stats.done_reason})")
        else:
            # Nothing came back: the message did not happen. Give its text back to the prompt.
            prompt = self.history.pop().content
            await user_view.remove()
            await answer_view.remove()
            if not self.prompt.value:
                self.prompt.value = prompt
        if failed is not None:
            self.error(failed.error)
            if isinstance(failed.error, ServiceUnavailable):
                self.watch_service()

    # -- actions -------------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if self._answer_worker is not None and self.answering:
            self._answer_worker.cancel()

    async def action_new_conversation(self) -> None:
        if self._answer_worker is not None and self.answering:
            self._answer_worker.cancel()
            await self._answer_worker.wait()
        self.history.clear()
        await self.messages.clear()
        self.status.finished(None)
        self.prompt.focus()
        self.notify("new conversation", timeout=2)

    def action_help(self) -> None:
        bindings = self.screen.active_bindings.items()
        keys = [(key, b.binding.description) for key, b in bindings if b.binding.id]
        self.push_screen(HelpScreen(keys, self.service_label))
