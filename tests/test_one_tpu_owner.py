"""One TPU, one owner: `ask`, `chat --plain` and `bench` talk to the running service (a real one on a
temporary socket, scripted engine) and load a model in-process only with --local or when none runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import TINY_HF, InProcessService, in_process

SCRIPT = "Hello from the service. "
LLM_TPU = [sys.executable, "-m", "appliance.cli.main"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    with in_process(tmp_path_factory.mktemp("owner"), model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


def llm_tpu(socket: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # The model named here does not exist: only the service can answer (a local load would fail).
    env = {**os.environ, "LLM_TPU_SOCKET": socket}
    return subprocess.run(
        [*LLM_TPU, *args], input=stdin, capture_output=True, text=True, timeout=300, env=env
    )


def test_ask_goes_to_the_service(service: InProcessService) -> None:
    before = service.engine.prefill_calls
    proc = llm_tpu(service.socket, "ask", "-n", "4", "--json", "Hi")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["model"] == "scripted" and SCRIPT.startswith(record["response"])
    assert record["usage"]["completion_tokens"] == 4 and record["usage"]["prompt_tokens"] > 1
    assert service.engine.prefill_calls == before + 1
    refused = llm_tpu(service.socket, "ask", "--model", "other-model", "Hi")
    assert refused.returncode == 2 and "not served here" in refused.stderr and "--local" in refused.stderr


def test_chat_plain_goes_to_the_service_and_keeps_history(service: InProcessService) -> None:
    before = service.engine.prefill_calls
    proc = llm_tpu(service.socket, "chat", "--plain", "-n", "3", stdin="Hi\nAgain\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    assert len([line for line in proc.stdout.splitlines() if line.strip()]) == 2
    assert service.engine.prefill_calls == before + 2
    # The second turn carried the first: the engine's cache holds both user messages' tokens.
    assert service.engine.last_prefill_len < len(service.engine.cache)


def test_bench_measures_through_the_service(service: InProcessService) -> None:
    proc = llm_tpu(
        service.socket,
        "bench",
        "--service",
        "--prompt-tokens",
        "8,32",
        "--gen-tokens",
        "3",
        "--repeat",
        "1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["where"].startswith("the service at") and data["model"] == "scripted"
    rows = data["rows"]
    assert [r["new_tokens"] for r in rows] == [3, 3] and rows[0]["prompt_tokens"] < rows[1]["prompt_tokens"]


def test_local_loads_here_even_with_a_service(service: InProcessService) -> None:
    before = service.engine.prefill_calls
    proc = llm_tpu(service.socket, "ask", "--local", "--model", str(TINY_HF), "-n", "3", "--json", "Hi")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] != "scripted"
    assert service.engine.prefill_calls == before


def test_bench_service_without_a_service_says_so(tmp_path: Path) -> None:
    proc = llm_tpu(str(tmp_path / "none.sock"), "bench", "--service")
    assert proc.returncode == 1 and proc.stderr.startswith("error: no service socket")
    assert "systemctl start llm-tpu" in proc.stderr and "Traceback" not in proc.stderr


def test_chat_with_stderr_redirected_says_so_on_stdout(service: InProcessService, tmp_path: Path) -> None:
    """`chat 2>log` in a terminal: the line chat starts, and stdout (the terminal) says why."""
    log = tmp_path / "log"
    script = (
        f"import pty, sys; sys.exit(pty.spawn(['sh', '-c', '{' '.join(LLM_TPU)} chat -n 2 2>{log}']) >> 8)"
    )
    env = {**os.environ, "LLM_TPU_SOCKET": service.socket}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input="Hi\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "stderr is not a terminal: using the line chat" in proc.stdout, (proc.stdout, log.read_text())
