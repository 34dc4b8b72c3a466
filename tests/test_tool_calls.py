"""Issue 13 item 4: tool calls for chat templates that render tools (Qwen2/2.5 ``<tool_call>``).

The service runs the scripted engine on a copy of the fixture model whose chat template (written here,
Qwen2.5's shape) renders tools; the script is what such a model answers when it calls a tool. The stock
``ollama`` and ``openai`` clients read the calls back, whole and streamed, and send the results back as
``role: "tool"`` messages. The fixture's own template has no place for tools: refused by name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest
from support.service import TINY_HF, InProcessService, in_process
from support.stock_clients import VIA, tcp_settings
from support.stock_clients import ollama_client as _ollama
from support.stock_clients import openai_client as _openai

from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.tool_calls import ToolCallFilter, split_tool_calls
from appliance.generation.types import Message, ToolCall

TOOLS_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You may call these functions:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Answer a call as <tool_call>{"name": ..., "arguments": ...}</tool_call>.<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>
{{ {"name": call.function.name, "arguments": call.function.arguments} | tojson }}
</tool_call>
{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
CALL = {"name": "get_weather", "arguments": {"city": "Oslo"}}
SCRIPT = f"Let me look.<tool_call>\n{json.dumps(CALL)}\n</tool_call><|im_end|>"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


def _tools_model(root: Path) -> Path:
    model = root / "tiny-tools"
    shutil.copytree(TINY_HF, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = TOOLS_TEMPLATE
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("tools")
    model = _tools_model(tmp)
    scripted = {"ref": str(model), "scripted": {"text": SCRIPT}}
    with in_process(tmp, server={"tcp": tcp_settings(tmp)}, model=scripted) as svc:
        yield svc


def test_split_and_stream_filter() -> None:
    text = 'Sure.<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    assert split_tool_calls(text) == ("Sure.", [ToolCall("f", '{"x": 1}')])
    assert split_tool_calls("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])
    stream = ToolCallFilter()
    out = "".join(stream.feed(text[i : i + 3]) for i in range(0, len(text), 3))
    assert out == "Sure." and stream.finish() == ("", [ToolCall("f", '{"x": 1}')])
    plain = ToolCallFilter()
    assert (
        plain.feed("a <tool") == "a " and plain.feed("s are") == "<tools are" and plain.finish() == ("", [])
    )


def test_tools_are_rendered_only_by_a_template_that_takes_them(tmp_path: Path) -> None:
    tok = ChatTokenizer.from_dir(_tools_model(tmp_path))
    template = make_template("tokenizer", tok)
    assert template.render_tools is not None
    history = [
        Message("user", "Weather in Oslo?"),
        Message("assistant", "", (ToolCall("get_weather", '{"city": "Oslo"}'),)),
        Message("tool", "sunny, 21 C"),
    ]
    prompt = tok.decode(template.with_tools(TOOLS).render(history))
    assert '"name": "get_weather"' in prompt and "sunny, 21 C" in prompt and "<tool_call>" in prompt
    plain = make_template("tokenizer", ChatTokenizer.from_dir(TINY_HF))
    assert plain.render_tools is None


@VIA
@pytest.mark.parametrize("stream", [False, True])
def test_ollama_tool_calls(service: InProcessService, stream: bool, via: str) -> None:
    client = _ollama(service, via)
    if stream:
        parts = list(client.chat(model="scripted", messages=ASK, tools=TOOLS, stream=True))
        content = "".join(p.message.content or "" for p in parts)
        calls = [c for p in parts for c in (p.message.tool_calls or [])]
        assert parts[-1].done
    else:
        answer = client.chat(model="scripted", messages=ASK, tools=TOOLS)
        content, calls = answer.message.content or "", list(answer.message.tool_calls or [])
    assert content == "Let me look." and "tool_call" not in content
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    # the result goes back as a tool message after the assistant's call
    history = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [{"function": CALL}]},
        {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
    ]
    again = client.chat(model="scripted", messages=history, tools=TOOLS, options={"num_predict": 4})
    assert again.done


@VIA
@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_calls(service: InProcessService, stream: bool, via: str) -> None:
    client = _openai(service, via)
    args: dict[str, Any] = {"model": "scripted", "messages": ASK, "tools": TOOLS}
    if stream:
        chunks = [c for c in client.chat.completions.create(**args, stream=True) if c.choices]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        deltas = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
        assert [d.index for d in deltas] == [0] and deltas[0].id
        name, arguments = deltas[0].function.name, deltas[0].function.arguments  # type: ignore[union-attr]
        finish = chunks[-1].choices[0].finish_reason
    else:
        done = client.chat.completions.create(**args)
        message = done.choices[0].message
        content, finish = message.content or "", done.choices[0].finish_reason
        assert message.tool_calls and len(message.tool_calls) == 1
        call = message.tool_calls[0]
        name, arguments = call.function.name, call.function.arguments  # type: ignore[union-attr]
    assert finish == "tool_calls" and content == "Let me look."
    assert name == "get_weather" and json.loads(arguments or "") == {"city": "Oslo"}
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
    ]
    again = client.chat.completions.create(model="scripted", messages=history, tools=TOOLS, max_tokens=4)  # type: ignore[arg-type]
    assert again.choices[0].finish_reason == "length"


def test_show_names_the_tools_capability(service: InProcessService) -> None:
    assert _ollama(service).show("scripted").capabilities == ["completion", "tools"]


def test_without_tools_the_markup_stays_text(service: InProcessService) -> None:
    answer = _ollama(service).chat(model="scripted", messages=ASK, options={"num_predict": 64})
    assert "<tool_call>" in (answer.message.content or "") and not answer.message.tool_calls


def test_a_template_without_tools_is_refused_by_name(tmp_path: Path) -> None:
    with in_process(tmp_path, model={"scripted": {"text": SCRIPT}}) as svc:
        with pytest.raises(ollama.ResponseError) as info:
            _ollama(svc).chat(model="scripted", messages=ASK, tools=TOOLS)
        assert info.value.status_code == 400 and "tools: this model's chat template" in info.value.error
        assert _ollama(svc).show("scripted").capabilities == ["completion"]
        result = [*ASK, {"role": "assistant", "content": "", "tool_calls": [{"function": CALL}]}]
        with pytest.raises(ollama.ResponseError, match=r"messages\[1\]: tool calls and results need"):
            _ollama(svc).chat(model="scripted", messages=[*result, {"role": "tool", "content": "sunny"}])
        with pytest.raises(openai.BadRequestError, match="tools: this model's chat template"):
            _openai(svc).chat.completions.create(model="scripted", messages=ASK, tools=TOOLS)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="tool_choice"):
            _openai(svc).chat.completions.create(
                model="scripted",
                messages=ASK,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
                tool_choice="required",
            )
