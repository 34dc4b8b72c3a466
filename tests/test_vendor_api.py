"""The vendor Qwen-TPU demo's `POST /chat/completions` {question, history, stream} over the real socket."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import TINY_HF, InProcessService, curl, in_process

from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Message

ANSWER = "Hello there,\n你好!"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("vendor")
    with in_process(tmp, model={"scripted": {"text": ANSWER + "<|im_end|>"}}) as svc:
        yield svc


def _prompt(messages: list[Message]) -> list[int]:
    return make_template("tokenizer", ChatTokenizer.from_dir(Path(TINY_HF))).render(messages)


def test_non_stream_answers_data_with_the_history_as_turns(service: InProcessService) -> None:
    body = {"question": "Hi", "history": ["你是谁？", "我是Qwen。"]}
    status, out = curl(service.socket, "/chat/completions", json.dumps(body))
    assert status == 200, out
    assert json.loads(out) == {"data": ANSWER}
    want = _prompt([Message("user", "你是谁？"), Message("assistant", "我是Qwen。"), Message("user", "Hi")])
    assert list(service.engine.cache[: len(want)]) == want
    # pairs are the same conversation
    pairs = {"question": "Hi", "history": [["你是谁？", "我是Qwen。"]], "stream": False}
    assert curl(service.socket, "/chat/completions", json.dumps(pairs)) == (status, out)


def test_stream_sends_the_answer_so_far(service: InProcessService) -> None:
    status, out = curl(service.socket, "/chat/completions", json.dumps({"question": "Hi", "stream": True}))
    assert status == 200, out
    events = [e for e in out.replace("\r\n", "\n").split("\n\n") if e.strip()]
    texts = ["\n".join(line.removeprefix("data: ") for line in e.split("\n")) for e in events]
    assert len(texts) > 2 and texts[-1] == ANSWER
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # cumulative, like the vendor's


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"question": "Hi", "history": ["only a question"]}, "must alternate question, answer"),
        ({"question": "Hi", "history": [["a", "b", "c"]]}, "history[0] must be a [question, answer] pair"),
        ({"history": []}, "question: Field required"),
        ({"question": "Hi", "temperature": 2}, "temperature: unknown field"),
    ],
)
def test_bad_vendor_requests_are_400_json(
    service: InProcessService, body: dict[str, object], why: str
) -> None:
    status, out = curl(service.socket, "/chat/completions", json.dumps(body))
    assert status == 400, out
    assert why in json.loads(out)["error"]
