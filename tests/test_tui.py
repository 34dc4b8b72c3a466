"""The chat TUI driven with Pilot against the real service on a temporary Unix socket (scripted engine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import (
    LLM_TPU,
    TINY_HF,
    InProcessService,
    in_process,
    scripted_settings,
    serve_env,
    wait_for_socket,
    wait_healthy,
    write_config,
)
from support.tui_pilot import answer_views, app_for, errors, run_async, send, until

from appliance.client import ServiceClient
from appliance.generation.types import Message
from appliance.tui import ChatStore

SCRIPT = "The quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    with in_process(tmp_path_factory.mktemp("tui"), model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


@run_async
async def test_answer_streams_into_the_list_and_status_shows_speed(service: InProcessService) -> None:
    app = app_for(service.socket, 12)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ready)
        assert "scripted" in app.status.line and "ready" in app.status.line
        await send(pilot, "Hi, Ada!")
        await until(pilot, lambda: len(app.history) == 2)
        answer = app.history[1]
        assert answer.role == "assistant" and SCRIPT.startswith(answer.content) and len(answer.content) > 10
        await pilot.pause()
        assert answer_views(app)[0].body.source == answer.content
        assert "tok/s" in app.status.line and "ttft" in app.status.line and "12 tokens" in app.status.line
        assert app.status.stats is not None and app.status.stats.tokens_per_second > 0
        # The second turn sends the whole conversation, the full first answer included.
        await send(pilot, "More.")
        await until(pilot, lambda: len(app.history) == 4)
        assert app.history[:2] == [Message("user", "Hi, Ada!"), answer]
        assert not errors(app)


@run_async
async def test_escape_stops_the_answer_keeps_it_and_the_next_message_works(service: InProcessService) -> None:
    app = app_for(service.socket, 100000)
    service.engine.step_delay_s = 0.03
    try:
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.ready)
            await send(pilot, "Tell me everything.")
            await until(pilot, lambda: (app.status.streamed_tokens or 0) >= 5)
            await pilot.press("escape")
            await until(pilot, lambda: not app.answering)
            assert len(app.history) == 2 and len(app.history[1].content) > 5
            assert "(interrupted: stopped with Esc)" in str(answer_views(app)[0].note.render())
            # Closing the stream cancelled the generation on the service.
            await until(pilot, lambda: not service.runner.scheduler.busy, timeout=3)
            service.engine.step_delay_s = 0.0
            app.options["num_predict"] = 4
            await send(pilot, "Short, please.")
            await until(pilot, lambda: len(app.history) == 4)
            assert app.history[3].content and "4 tokens" in app.status.line
            assert not errors(app)
    finally:
        service.engine.step_delay_s = 0.0


@run_async
async def test_service_not_running_is_a_notification_and_the_prompt_comes_back(tmp_path: Path) -> None:
    app = app_for(tmp_path / "nothing.sock", 4)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.status.state == "service not running")
        assert any("no service socket" in e for e in errors(app))
        await send(pilot, "Anyone there?")
        await until(pilot, lambda: not app.answering and len(errors(app)) >= 2)
        assert app.history == [] and app.messages.views == []
        assert app.prompt.value == "Anyone there?"
        assert app.is_running


@run_async
async def test_refused_request_shows_the_services_message(service: InProcessService) -> None:
    app = app_for(service.socket, 4)
    app.options["top_p"] = 0  # the service refuses it with a JSON error naming the option
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.ready)
        await send(pilot, "Hi")
        await until(pilot, lambda: bool(errors(app)))
        assert "top_p" in errors(app)[0]
        assert app.history == [] and app.prompt.value == "Hi"


def _serve(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [LLM_TPU, "serve", "--config", str(config)],
        env=serve_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@run_async
async def test_service_killed_mid_answer_then_back(tmp_path: Path) -> None:
    sock = tmp_path / "llm.sock"
    slow = write_config(tmp_path, scripted_settings(sock, model={"scripted": {"step_delay_ms": 30.0}}))
    proc = _serve(slow)
    try:
        wait_healthy(sock, timeout=60)
        app = app_for(sock, 100000)
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.ready)
            await send(pilot, "Go on and on.")
            await until(pilot, lambda: (app.status.streamed_tokens or 0) >= 3)
            proc.kill()
            proc.wait()
            await until(pilot, lambda: not app.answering)
            assert any("broke mid-answer" in e for e in errors(app))
            assert len(app.history) == 2 and app.history[1].content  # the conversation is kept
            assert "(interrupted: the service went away)" in str(answer_views(app)[0].note.render())
            stored = app.store.messages(app.chat.id)  # saved as shown, with its note
            assert [m.content for m in stored] == [m.content for m in app.history]
            assert stored[1].note == "(interrupted: the service went away)"
            await until(pilot, lambda: app.status.state == "service not running")
            fast = tmp_path / "fast"
            fast.mkdir()
            proc = _serve(write_config(fast, scripted_settings(sock)))
            await until(pilot, lambda: app.ready, timeout=60)
            app.options["num_predict"] = 4
            await send(pilot, "Still there?")
            await until(pilot, lambda: len(app.history) == 4)
            assert app.history[2] == Message("user", "Still there?") and app.history[3].content
            assert "4 tokens" in app.status.line
    finally:
        proc.kill()
        proc.wait()


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
def test_llm_tpu_chat_in_a_terminal_starts_and_stops_its_own_service(tmp_path: Path) -> None:
    """End to end: `llm-tpu chat` finds no service, spawns one (scripted engine via --config), chats, quits."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    config = write_config(tmp_path, scripted_settings(tmp_path / "unused.sock"))
    session = f"llm-tpu-test-{os.getpid()}"
    rc_file = tmp_path / "rc"
    command = (
        f"env XDG_RUNTIME_DIR={runtime} XDG_DATA_HOME={tmp_path / 'data'} XDG_CONFIG_HOME={tmp_path / 'cfg'} "
        f"LLM_TPU_SOCKET={tmp_path / 'none.sock'} "
        f"{LLM_TPU} chat --config {config} -n 6; echo $? > {rc_file}; sleep 30"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", command)
    try:

        def screen() -> str:
            return _tmux("capture-pane", "-p", "-t", session)

        def wait_for(text: str, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while text not in screen():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{text!r} not on the screen:\n{screen()}")
                time.sleep(0.1)

        wait_for("· ready")
        assert len(list(runtime.glob("llm-tpu-chat-*/llm.sock"))) == 1  # the private service's socket
        _tmux("send-keys", "-t", session, "Hi, Ada!")
        wait_for("Hi, Ada!")  # typed, then Enter: sent in one burst the terminal would read it as a paste
        _tmux("send-keys", "-t", session, "Enter")
        wait_for("tok/s")
        assert "The quick brown" in screen()
        _tmux("send-keys", "-t", session, "C-q")
        deadline = time.monotonic() + 30
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rc_file.read_text().strip() == "0"
        assert list(runtime.iterdir()) == []  # the child was stopped and its directory removed
        (chat,) = ChatStore(
            tmp_path / "data" / "llm-tpu" / "chats.sqlite3"
        ).chats()  # saved under XDG_DATA_HOME
        assert chat.title == "Hi, Ada!"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@run_async
async def test_loading_service_shows_loading_then_answers(tmp_path: Path) -> None:
    """The host engine on the fixture model: /health is 503 while torch and the weights load."""
    sock = tmp_path / "llm.sock"
    config = write_config(tmp_path, scripted_settings(sock, model={"engine": "host", "ref": str(TINY_HF)}))
    proc = _serve(config)
    try:
        wait_for_socket(sock, proc)  # bound before the model loads, so the first poll already sees 503
        app = app_for(sock, 4, retry_s=0.05)
        async with app.run_test() as pilot:
            seen: list[str] = []
            deadline = time.monotonic() + 90
            while not app.ready:
                if not seen or seen[-1] != app.status.state:
                    seen.append(app.status.state)
                assert time.monotonic() < deadline, seen
                await pilot.pause(0.01)
            assert "loading model…" in seen, seen
            await send(pilot, "Hi")
            await until(pilot, lambda: len(app.history) == 2, timeout=60)
            assert "4 tokens" in app.status.line and not errors(app)
    finally:
        proc.kill()
        proc.wait()


@run_async
async def test_escape_while_queued_leaves_the_queue_at_once(service: InProcessService) -> None:
    """No token has come yet (another request holds the TPU): Esc must still reach the service now.

    The service sends a chat's headers only with its first token, so closing "the stream" is not
    enough; the TUI cuts the connection, and the queued request is dropped at once.
    """
    import threading

    scheduler = service.runner.scheduler
    service.engine.step_delay_s = 0.02
    other = threading.Thread(
        target=lambda: list(
            ServiceClient.for_socket(service.socket).chat_stream(
                [{"role": "user", "content": "hold the engine"}], options={"num_predict": 1500}
            )
        )
    )
    try:
        other.start()
        app = app_for(service.socket, 4)
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.ready and scheduler.busy)
            await send(pilot, "Me next.")
            await until(pilot, lambda: scheduler.queue_depth == 1)
            await pilot.press("escape")
            await until(pilot, lambda: not app.answering)
            await until(pilot, lambda: scheduler.queue_depth == 0, timeout=2)
            assert scheduler.busy  # the other request is still generating: ours left the queue early
            assert app.history == [] and app.prompt.value == "Me next."
            assert not errors(app)  # cancelling is not an error
    finally:
        # The holder only has to outlive the assertions (up to 30 s on a loaded machine); then it
        # finishes at full speed.
        service.engine.step_delay_s = 0.0
        other.join(timeout=30)
