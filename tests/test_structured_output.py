"""Issue 13 item 4: structured output (Ollama ``format``, OpenAI ``response_format``) by constrained decoding.

The tiny Qwen2 fixture runs on the host engine: its weights are random, so what it says unconstrained is
never JSON; constrained, every answer parses and fits the schema. The stock ``ollama`` and ``openai``
clients drive the real service over its Unix socket, whole and streamed. ``format: "json"`` is shown on
the scripted engine, whose script is a JSON object followed by more text: the grammar ends the answer
where the object ends. A token-only engine (a fused greedy head, no TPU here: a stand-in) is refused by
name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.service import TINY_HF, InProcessService, in_process
from support.stock_clients import VIA, raw_client, tcp_settings
from support.stock_clients import ollama_client as _ollama
from support.stock_clients import openai_client as _openai
from support.tokenizer_fixtures import tiktoken_dir

from appliance.engine.protocol import Capabilities
from appliance.engine.scripted import ScriptedEngine
from appliance.errors import InvalidRequest
from appliance.generation.loop import Generator
from appliance.generation.structured import ANY_JSON_OBJECT
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Finished, GenerationOptions, Message

# bounded string and integer: a random model cannot make the answer run past max tokens
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Who are you? Answer as JSON."}]
SCRIPT = '{"city": "Oslo", "rank": 3} and then some more words'


def _fits(text: str) -> None:
    value = json.loads(text)
    assert isinstance(value, dict) and set(value) == {"name", "age"}, text
    assert isinstance(value["name"], str) and len(value["name"]) <= 12, text
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 150, text


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("structured-host")
    with in_process(tmp, model={"ref": str(TINY_HF), "engine": "host", "threads": 1}) as svc:
        yield svc


def test_unconstrained_output_of_the_random_model_is_not_json(host: InProcessService) -> None:
    client = _ollama(host)
    name = client.list().models[0].model
    answer = client.chat(model=name, messages=ASK, options={"temperature": 0, "num_predict": 24})
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.message.content or "")


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_format_schema(host: InProcessService, stream: bool) -> None:
    client = _ollama(host)
    name = client.list().models[0].model
    for seed in (1, 2):
        opts = {"temperature": 0.9, "seed": seed, "num_predict": 64}
        if stream:
            parts = list(client.chat(model=name, messages=ASK, format=SCHEMA, options=opts, stream=True))
            assert parts[-1].done_reason == "stop"
            _fits("".join(p.message.content or "" for p in parts))
            gen = list(client.generate(model=name, prompt="Who?", format=SCHEMA, options=opts, stream=True))
            _fits("".join(p.response for p in gen))
        else:
            answer = client.chat(model=name, messages=ASK, format=SCHEMA, options=opts)
            assert answer.done_reason == "stop"
            _fits(answer.message.content or "")
            _fits(client.generate(model=name, prompt="Who?", format=SCHEMA, options=opts).response)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_response_format_json_schema(host: InProcessService, stream: bool) -> None:
    client = _openai(host)
    name = client.models.list().data[0].id
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    for seed in (1, 2):
        args: dict[str, Any] = {"model": name, "messages": ASK, "max_tokens": 64, "seed": seed}
        if stream:
            chunks = list(client.chat.completions.create(**args, response_format=fmt, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        else:
            done = client.chat.completions.create(**args, response_format=fmt)
            assert done.choices[0].finish_reason == "stop"
            text = done.choices[0].message.content or ""
        _fits(text)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("structured-scripted")
    with in_process(tmp, server={"tcp": tcp_settings(tmp)}, model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


@VIA
def test_json_mode_ends_the_answer_where_the_object_ends(scripted: InProcessService, via: str) -> None:
    client, oai = _ollama(scripted, via), _openai(scripted, via)
    plain = client.chat(model="scripted", messages=ASK, options={"num_predict": 64})
    assert (plain.message.content or "").startswith(SCRIPT[:20]) and "and then" in (
        plain.message.content or ""
    )
    answer = client.chat(model="scripted", messages=ASK, format="json", options={"num_predict": 64})
    assert json.loads(answer.message.content or "") == {"city": "Oslo", "rank": 3}
    assert answer.done_reason == "stop"
    done = oai.chat.completions.create(
        model="scripted",
        messages=ASK,
        response_format={"type": "json_object"},
        max_tokens=64,  # type: ignore[arg-type]
    )
    assert json.loads(done.choices[0].message.content or "") == {"city": "Oslo", "rank": 3}


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("/api/chat", {"format": "yaml"}, "format is 'yaml'"),
        ("/api/chat", {"format": {"type": "object", "properties": 5}}, "format: "),
        ("/api/generate", {"format": 7}, "format"),
        ("/v1/chat/completions", {"response_format": {"type": "xml"}}, "response_format.type is 'xml'"),
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema"}},
            "json_schema.schema is missing",
        ),
    ],
)
def test_bad_formats_are_refused_by_name(
    scripted: InProcessService, path: str, body: dict[str, Any], names: str
) -> None:
    base = {"model": "scripted", "stream": False}
    base |= {"prompt": "Hi"} if path == "/api/generate" else {"messages": ASK}
    reply = raw_client(scripted).post(path, json=base | body)
    assert reply.status_code == 400, reply.text
    assert names in reply.text


class _TokensOnlyEngine(ScriptedEngine):
    """Stands in for a bmodel with a fused greedy head (tokens, no logits): no TPU here."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, returns_logits=False)


def test_token_only_engines_are_refused_by_name() -> None:
    tok = ChatTokenizer.from_dir(TINY_HF)
    template = make_template("tokenizer", tok)
    script = tok.encode('{"a": 1}')
    structured = GenerationOptions(response_schema=ANY_JSON_OBJECT, max_new_tokens=8)
    logits = Generator(ScriptedEngine(script, vocab_size=tok.vocab_size), tok, template)
    logits.refuse_unsupported(structured)
    fin = list(logits.generate([Message("user", "Hi")], structured))[-1]
    assert isinstance(fin, Finished) and json.loads(fin.text) == {"a": 1}
    tokens_only = Generator(_TokensOnlyEngine(script, vocab_size=tok.vocab_size), tok, template)
    with pytest.raises(InvalidRequest, match=r"format / response_format .*returns tokens only"):
        tokens_only.refuse_unsupported(structured)


class _GreedyHeadEngine(ScriptedEngine):
    """Stands in for a bmodel with a greedy_head beside its logits lm_head (the bmrt runner's
    ``greedy_on_device``): a greedy step (no DeviceSampling) answers a token, not logits. No TPU here."""

    greedy_on_device = True

    def prefill(self, ids: Any, sampling: Any = None) -> Any:
        return self._greedy(super().prefill(ids, sampling), sampling)

    def decode(self, token: int, sampling: Any = None) -> Any:
        return self._greedy(super().decode(token, sampling), sampling)

    def _greedy(self, out: Any, sampling: Any) -> Any:
        if sampling is None and self.greedy_on_device:
            return dataclasses.replace(out, token=int(out.logits.argmax()), logits=None)
        return out


def test_a_greedy_device_head_steps_aside_for_structured_output() -> None:
    tok = ChatTokenizer.from_dir(TINY_HF)
    template = make_template("tokenizer", tok)
    engine = _GreedyHeadEngine(tok.encode('{"a": 1} trailing text'), vocab_size=tok.vocab_size)
    gen = Generator(engine, tok, template)
    greedy = GenerationOptions(max_new_tokens=32).greedy()
    plain = list(gen.generate([Message("user", "Hi")], greedy))[-1]
    assert isinstance(plain, Finished) and "trailing" in plain.text  # the device head chose
    structured = dataclasses.replace(greedy, response_schema=ANY_JSON_OBJECT)
    fin = list(gen.generate([Message("user", "Hi")], structured))[-1]
    assert isinstance(fin, Finished) and json.loads(fin.text) == {"a": 1} and fin.done_reason == "stop"
    assert engine.greedy_on_device  # given back for the next request


def test_a_tokenizer_llguidance_cannot_read_is_refused_by_name(tmp_path: Path) -> None:
    tok = ChatTokenizer.from_dir(tiktoken_dir(tmp_path / "qwen"))  # Qwen-7B's qwen.tiktoken
    template = make_template("chatml", tok)
    gen = Generator(ScriptedEngine(tok.encode("{}"), vocab_size=tok.vocab_size), tok, template)
    gen.refuse_unsupported(GenerationOptions())
    with pytest.raises(InvalidRequest, match=r"needs a tokenizer\.json tokenizer"):
        gen.refuse_unsupported(GenerationOptions(response_schema=ANY_JSON_OBJECT))
