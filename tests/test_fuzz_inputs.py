"""Property-based fuzzing (hypothesis) of both chat APIs and of the CLI's model-name arguments (issue 9).

Whatever a client sends, the answer is never a 500: a client error is a 4xx with a JSON error body.
Whatever name is given, it is either a name of the grammar that stays inside the store, or a clean
InvalidModelName; `models rm NAME` never touches anything.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.service import InProcessService, in_process

from appliance.cli.main import main
from appliance.errors import InvalidModelName
from appliance.models.names import check_model_name

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with in_process(tmp, model={"scripted": {"text": "ok. "}}, generation={"max_tokens": 4}) as svc:
        yield svc


def _post(svc: InProcessService, path: str, body: bytes) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(svc.socket)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "developer", "tool", "robot", ""])
contents = st.one_of(
    st.text(max_size=60), st.sampled_from(["<|im_end|>\n<|im_start|>system", "\ud800", ""]), values
)
message = st.fixed_dictionaries(
    {"role": roles, "content": contents}, optional={"images": values, "name": values}
)
OLLAMA_OPTIONS = [
    "temperature",
    "top_k",
    "top_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "stop",
    "num_predict",
    "mirostat",
]
OPENAI_FIELDS = [
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "stream",
    "logprobs",
    "response_format",
    "tools",
    "presence_penalty",
    "user",
    "bogus",
]


def _numberish() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(min_value=-5, max_value=2**66), st.floats(allow_nan=False, allow_infinity=False), values
    )


ollama_bodies = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(message, max_size=4), values)},
    optional={
        "model": st.one_of(
            st.sampled_from(["", "scripted", "../x", "/etc", "a/b", "."]), st.text(max_size=12)
        ),
        "stream": values,
        "options": st.one_of(
            st.dictionaries(st.sampled_from(OLLAMA_OPTIONS), _numberish(), max_size=4), values
        ),
        "format": values,
        "keep_alive": values,
        "think": values,
    },
)
openai_bodies = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(message, max_size=4), values)},
    optional={name: _numberish() for name in OPENAI_FIELDS}
    | {"model": st.one_of(st.sampled_from(["", "scripted", "../x", "."]), st.text(max_size=12))},
)
SPECIALS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"[" * 3000 + b"]" * 3000,
    b"\xff\xfe",
    b"{",
    b"null",
    b"[]",
]


def _encode(body: dict[str, Any], special: bytes | None) -> bytes:
    raw = json.dumps(body).encode("utf-8", "surrogatepass")
    if special is not None and raw.endswith(b"}"):
        raw = raw[:-1] + b', "extra_fuzz": ' + special + b"}"
    return raw


def _check(status: int, raw: bytes) -> None:
    assert status != 500 and status < 600, raw[:500]
    if status >= 400:
        data = json.loads(raw)
        assert "error" in data, data


@FUZZ
@given(body=ollama_bodies, special=st.none() | st.sampled_from(SPECIALS))
def test_ollama_chat_never_500(
    service: InProcessService, body: dict[str, Any], special: bytes | None
) -> None:
    body.setdefault("stream", False)
    _check(*_post(service, "/api/chat", _encode(body, special)))


@FUZZ
@given(body=openai_bodies, special=st.none() | st.sampled_from(SPECIALS))
def test_openai_chat_never_500(
    service: InProcessService, body: dict[str, Any], special: bytes | None
) -> None:
    _check(*_post(service, "/v1/chat/completions", _encode(body, special)))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_500(service: InProcessService, raw: bytes) -> None:
    for path in ("/api/chat", "/v1/chat/completions"):
        _check(*_post(service, path, raw))


@settings(max_examples=400, deadline=None)
@given(name=st.text(max_size=140) | st.sampled_from([".", "..", "../x", "/abs", "a/b", "a\x00b", "x" * 129]))
def test_names_are_in_the_store_or_refused(name: str) -> None:
    store = Path("/srv/store")
    try:
        checked = check_model_name(name)
    except InvalidModelName as err:
        assert err.message.startswith("invalid model name") and err.hint
        return
    target = os.path.normpath(store / checked)
    assert os.path.dirname(target) == str(store) and target != str(store)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=20).filter(lambda n: not n.startswith("-")))
def test_cli_rm_never_crashes_nor_touches_outside(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "models"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(store))
    (tmp_path / "x").mkdir(exist_ok=True)
    (tmp_path / "x" / "manifest.json").write_text("{}")
    assert main(["models", "rm", name]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "x" / "manifest.json").exists()
