"""Hostile and careless clients against the real service (issue 9 items 6 and 8).

Client errors get a 4xx JSON answer, never a 500; a prompt that cannot fit the context is refused
before it is tokenized; the TCP listener refuses a token file everyone can read, warns when it is
exposed beyond loopback, and a `serve` that fails to start leaves no socket behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import InProcessService, curl, in_process, scripted_settings, write_config

from appliance.config import load_config
from appliance.errors import ConfigError, ServiceError
from appliance.service.server import ServiceRunner

TOKEN = "s3cret-token-for-tests-0123456789"
SCRIPT = "The quick brown fox jumps over the lazy dog. "
USER = [{"role": "user", "content": "x"}]


def token_file(directory: Path, mode: int = 0o640) -> Path:
    path = directory / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("hardening")
    tcp = {"enabled": True, "host": "127.0.0.1", "port": 0, "token_file": str(token_file(tmp))}
    with in_process(tmp, server={"tcp": tcp}, model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


def _body(**fields: object) -> bytes:
    return json.dumps({"messages": USER, **fields}).encode()


NESTED = b'{"messages": [{"role": "user", "content": "x"}], "format": ' + b"[" * 5000 + b"]" * 5000 + b"}"
CLIENT_ERRORS = [
    ("/api/chat", _body(options={"seed": -1}), "seed"),
    ("/v1/chat/completions", _body(seed=-1), "seed"),
    ("/api/chat", NESTED, "nested"),
    ("/v1/chat/completions", NESTED.replace(b'"format"', b'"response_format"'), "nested"),
    (
        "/api/chat",
        b'{"messages": [{"role": "user", "content": "x"}], "options": {"temperature": Infinity}}',
        "Infinity",
    ),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "NaN"),
    (
        "/api/chat",
        b'{"messages": [{"role": "user", "content": "x"}], "options": {"temperature": 1e400}}',
        "temperature",
    ),
]


@pytest.mark.parametrize(("path", "body", "needle"), CLIENT_ERRORS)
def test_client_errors_are_4xx_json(service: InProcessService, path: str, body: bytes, needle: str) -> None:
    status, text = curl(service.socket, path, body)
    assert 400 <= status < 500, (status, text)
    data = json.loads(text)
    message = data["error"]["message"] if isinstance(data["error"], dict) else data["error"]
    assert needle in message, message


def _raw_tcp(service: InProcessService, request: bytes) -> tuple[int, dict]:
    assert service.runner.tcp_address is not None
    with socket.create_connection(service.runner.tcp_address, timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "value", [b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer \xff\xfe", "Bearer é".encode("latin-1")]
)
def test_non_ascii_authorization_is_401(service: InProcessService, value: bytes) -> None:
    request = (
        b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + value + b"\r\n\r\n"
    )
    status, body = _raw_tcp(service, request)
    assert status == 401 and "bearer token" in body["error"]


def test_prompt_that_cannot_fit_is_refused_before_tokenizing(service: InProcessService) -> None:
    huge = "word " * (3_900_000 // 5)  # 3.9 MB, under the 4 MiB body limit
    body = json.dumps({"messages": [{"role": "user", "content": huge}]})
    status, text = curl(service.socket, "/api/chat", body)
    assert status == 400, text
    data = json.loads(text)
    assert data["code"] == "context_length_exceeded"
    # the cheap bound's wording ("at least"), not the windowing's exact count after tokenizing
    assert "at least" in data["error"], data["error"]
    status, _ = curl(service.socket, "/health")
    assert status == 200


def test_long_old_turns_are_not_tokenized_to_be_dropped(service: InProcessService) -> None:
    old = "word " * 100_000
    messages = [
        {"role": "user", "content": old},
        {"role": "assistant", "content": old},
        {"role": "user", "content": "Hi"},
    ]
    status, text = curl(
        service.socket,
        "/api/chat",
        json.dumps({"messages": messages, "stream": False, "options": {"num_predict": 3}}),
    )
    assert status == 200, text
    assert json.loads(text)["prompt_eval_count"] < 64


# -- item 8: the TCP listener ----------------------------------------------------------------------------
def _start(tmp: Path, **sections: object) -> tuple[ServiceRunner, BaseException | None]:
    cfg = write_config(tmp, scripted_settings(tmp / "llm.sock", **sections))
    loop = asyncio.new_event_loop()
    runner: ServiceRunner = loop.run_until_complete(_make(cfg))
    error: BaseException | None = None
    try:
        loop.run_until_complete(runner.start())
    except Exception as exc:
        error = exc
    if error is None:
        loop.run_until_complete(runner.stop())
    runner.scheduler.shutdown()
    loop.close()
    return runner, error


async def _make(cfg: Path) -> ServiceRunner:
    return ServiceRunner(load_config(cfg, env={}))


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o646])
def test_world_readable_token_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = token_file(tmp_path, mode)
    tcp = {"enabled": True, "host": "127.0.0.1", "port": 0, "token_file": str(path)}
    _, error = _start(tmp_path, server={"tcp": tcp})
    assert isinstance(error, ConfigError)
    assert "every user" in error.message and oct(mode)[2:] in error.message
    assert error.hint and f"chmod 0640 {path}" in error.hint
    assert not (tmp_path / "llm.sock").exists()


def test_non_loopback_bind_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tcp = {"enabled": True, "host": "0.0.0.0", "port": 0, "token_file": str(token_file(tmp_path))}
    with caplog.at_level(logging.WARNING, logger="appliance.service"):
        _, error = _start(tmp_path, server={"tcp": tcp})
    assert error is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.0.0.0" in w and "not loopback" in w for w in warnings), warnings


def test_failed_serve_removes_its_socket(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        tcp = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": busy.getsockname()[1],
            "token_file": str(token_file(tmp_path)),
        }
        _, error = _start(tmp_path, server={"tcp": tcp})
    finally:
        busy.close()
    assert isinstance(error, ServiceError) and "cannot listen" in error.message
    assert not (tmp_path / "llm.sock").exists()
