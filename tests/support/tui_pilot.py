"""Helpers for driving the chat TUI with Pilot in tests (tests/test_tui*.py)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec

from textual.pilot import Pilot

from appliance.client import AsyncServiceClient
from appliance.tui import ChatApp, ChatStore
from appliance.tui.widgets import MessageView

P = ParamSpec("P")


def run_async(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test on a fresh event loop (Textual's run_test needs one; no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


async def until(pilot: Pilot[None], cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await pilot.pause(0.02)


async def send(pilot: Pilot[None], text: str) -> None:
    await pilot.click("PromptInput")
    await pilot.press(*text)
    await pilot.press("enter")


def errors(app: ChatApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications if n.severity == "error"]


def notes(app: ChatApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def answer_views(app: ChatApp) -> list[MessageView]:
    return [v for v in app.messages.views if v.role == "assistant"]


def app_for(
    socket: str | Path, max_tokens: int, retry_s: float = 0.1, store: ChatStore | None = None, **kwargs: Any
) -> ChatApp:
    client = AsyncServiceClient.for_socket(socket, timeout=30)
    return ChatApp(
        client, store=store, options={"num_predict": max_tokens}, retry_interval_s=retry_s, **kwargs
    )
