"""Stock clients against the real service: `openai` over the TCP listener, `ollama` over TCP and the socket."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from support.service import InProcessService, in_process

from appliance.client import ServiceClient
from appliance.errors import InvalidRequest, ServiceUnavailable

TOKEN = "s3cret-token-for-tests-0123456789"
SCRIPT = "The quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("clients")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o640)
    tcp = {"enabled": True, "host": "127.0.0.1", "port": 0, "token_file": str(token_file)}
    with in_process(tmp, server={"tcp": tcp}, model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


def _base(svc: InProcessService) -> str:
    assert svc.runner.tcp_address is not None
    host, port = svc.runner.tcp_address
    return f"http://{host}:{port}"


def test_openai_client_non_stream_and_stream_with_usage(service: InProcessService) -> None:
    client = openai.OpenAI(base_url=_base(service) + "/v1", api_key=TOKEN)
    assert client.models.list().data[0].id == "scripted"  # the loaded model first
    done = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.5, seed=3
    )
    assert SCRIPT.startswith(done.choices[0].message.content or "")
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 4
    stream = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert SCRIPT.startswith(text) and text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_openai_client_sees_errors(service: InProcessService) -> None:
    client = openai.OpenAI(base_url=_base(service) + "/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "Hi"}], presence_penalty=2.5
        )
    wrong = openai.OpenAI(base_url=_base(service) + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_tcp_needs_the_token_except_for_health(service: InProcessService) -> None:
    base = _base(service)
    with urllib.request.urlopen(base + "/health") as resp:
        assert json.load(resp)["status"] == "ok"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/api/status")
    assert info.value.code == 401
    assert info.value.headers["WWW-Authenticate"] == "Bearer"
    assert "bearer token" in json.load(info.value)["error"]


def test_ollama_client_over_tcp_and_over_the_socket(service: InProcessService) -> None:
    tcp = ollama.Client(host=_base(service), headers={"Authorization": f"Bearer {TOKEN}"})
    parts = list(
        tcp.chat(
            model="scripted",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={"num_predict": 5, "temperature": 0},
        )
    )
    assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == 5
    text = "".join(p.message.content or "" for p in parts)
    assert SCRIPT.startswith(text)
    uds = ollama.Client(host="http://localhost", transport=httpx.HTTPTransport(uds=service.socket))
    whole = uds.chat(
        model="scripted", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 5}
    )
    assert whole.message.content == text
    assert whole.prompt_eval_count is not None and whole.eval_duration is not None
    assert uds.list().models[0].model == "scripted"  # the loaded model first
    with pytest.raises(ollama.ResponseError) as info:
        uds.chat(model="scripted", messages=[{"role": "user", "content": "Hi"}], options={"num_ctx": 4096})
    assert info.value.status_code == 400 and "num_ctx" in info.value.error


def test_own_client_over_both_transports(service: InProcessService) -> None:
    host, port = service.runner.tcp_address or ("", 0)
    for client in (
        ServiceClient.for_socket(service.socket),
        ServiceClient.for_tcp(host, port, TOKEN),
    ):
        assert client.health()["status"] == "ok"
        assert client.status()["model"]["name"] == "scripted"
        chunks = list(client.chat_stream([{"role": "user", "content": "Hi"}], options={"num_predict": 3}))
        assert chunks[-1]["done"] and chunks[-1]["eval_count"] == 3
        with pytest.raises(InvalidRequest, match="messages is empty"):
            list(client.chat_stream([]))


def test_own_client_reports_a_missing_service(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable, match="no service socket") as info:
        ServiceClient.for_socket(tmp_path / "none.sock").status()
    assert info.value.hint and "systemctl" in info.value.hint


def test_every_error_code_comes_back_as_its_class_with_its_hint() -> None:
    """The code -> class table is read from appliance/errors.py: each class the service can send returns."""
    import appliance.errors as errors_module
    from appliance.client.wire import service_error
    from appliance.errors import ApplianceError, ServiceError, error_class

    classes = [
        c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, ApplianceError)
    ]
    assert len(classes) > 15
    for cls in classes:
        err = cls("what went wrong", hint="what to do")
        ollama_shape = json.dumps(err.to_dict()).encode()
        openai_shape = json.dumps(
            {"error": {"message": err.message, "code": err.code, "hint": err.hint}}
        ).encode()
        for body in (ollama_shape, openai_shape):
            back = service_error(err.http_status, body)
            assert type(back) is cls and back.hint == "what to do" and back.message == "what went wrong"
    assert error_class("no_such_code") is ServiceError
    assert type(service_error(502, b"<html>bad gateway</html>")) is ServiceError


def test_own_client_through_a_mock_transport() -> None:
    """The transport is the seam: a test can answer for the service."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/chat"
        lines = [
            {"message": {"content": "Hel"}, "done": False, "eval_count": 1},
            {"message": {"content": "lo"}, "done": False, "eval_count": 2},
            {
                "message": {"content": ""},
                "done": True,
                "done_reason": "stop",
                "eval_count": 2,
                "eval_duration": 10**9,
            },
        ]
        return httpx.Response(200, content=b"".join(json.dumps(x).encode() + b"\n" for x in lines))

    from appliance.generation.types import Finished, TextDelta

    events = list(
        ServiceClient(httpx.MockTransport(handler)).chat_events([{"role": "user", "content": "Hi"}])
    )
    assert [e.tokens for e in events if isinstance(e, TextDelta)] == [1, 2]
    final = events[-1]
    assert isinstance(final, Finished) and final.text == "Hello" and final.timings.tokens_per_second == 2.0
