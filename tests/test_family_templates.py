"""Every seed family end to end through the service: its tokenizer format, its chat template's documented
token layout (sophgo-facts.md section 6) and its stop id, on the scripted engine over a real Unix socket."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.service import curl, in_process
from support.tokenizer_fixtures import bpe_dir, sentencepiece_dir, tiktoken_dir

from appliance.generation.tokenizer import ChatTokenizer
from appliance.models.manifest import ModelManifest, write_manifest

SYSTEM = "你是一个助手。Be brief."
HISTORY = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "写一个函数 add(a, b)"},
    {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
    {"role": "user", "content": "Now in one line, 谢谢!"},
]
ANSWER = "好的: lambda a, b: a + b"


def _chatml(tok: ChatTokenizer, messages: list[dict[str, str]]) -> list[int]:
    start, end, nl = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>"), tok.encode("\n")
    assert start is not None and end is not None
    ids: list[int] = []
    for m in messages:
        ids += [start, *tok.encode(f"{m['role']}\n{m['content']}"), end, *nl]
    return [*ids, start, *tok.encode("assistant\n")]


def _baichuan2(tok: ChatTokenizer, messages: list[dict[str, str]]) -> list[int]:
    ids = tok.encode(messages[0]["content"])
    for m in messages[1:]:
        ids += [195 if m["role"] == "user" else 196, *tok.encode(m["content"])]
    return [*ids, 196]


def _alpaca(tok: ChatTokenizer, messages: list[dict[str, str]]) -> list[int]:
    preamble = (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request."
    )
    return tok.encode(f"{preamble}\n\n### Instruction:\n{messages[-1]['content']}\n\n### Response:")


def _tiny_qwen2(directory: Path) -> Path:
    src = Path(__file__).parent / "fixtures" / "tiny-qwen2" / "hf"
    directory.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(src / name, directory / name)
    return directory


# family, tokenizer builder, template, stop token text, stop id, expected layout
FAMILIES: list[tuple[str, Callable[[Path], Path], str, str, Callable[..., list[int]]]] = [
    ("qwen", tiktoken_dir, "chatml", "<|im_end|>", _chatml),
    ("qwen2", _tiny_qwen2, "tokenizer", "<|im_end|>", _chatml),
    ("baichuan2", sentencepiece_dir, "baichuan2", "</s>", _baichuan2),
    ("wizardcoder", bpe_dir, "wizardcoder", "<|endoftext|>", _alpaca),
]


@pytest.mark.parametrize(
    ("family", "build", "template", "stop", "layout"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_family_prompt_layout_and_stop_through_the_service(
    tmp_path: Path,
    family: str,
    build: Callable[[Path], Path],
    template: str,
    stop: str,
    layout: Callable[..., list[int]],
) -> None:
    model_dir = tmp_path / family
    build(model_dir / "token_config")
    manifest = ModelManifest(
        name=family,
        family=family,
        engine="auto",
        files=(),
        template=template,
        extra={"tokenizer_dir": "token_config"},
    )
    write_manifest(model_dir, manifest)
    tok = ChatTokenizer.from_dir(model_dir / "token_config")
    stop_id = tok.token_to_id(stop)
    assert stop_id is not None
    # the scripted "model" says ANSWER, then its stop token, then text that must never reach the client
    script = f"{ANSWER}{stop}NEVER SHOWN"
    with in_process(tmp_path, model={"ref": str(model_dir), "scripted": {"text": script}}) as svc:
        body = json.dumps({"model": "scripted", "stream": False, "messages": HISTORY})
        status, out = curl(svc.socket, "/api/chat", body)
        assert status == 200, out
        reply = json.loads(out)
        assert reply["message"]["content"] == ANSWER
        assert reply["done_reason"] == "stop"
        prompt = list(svc.engine.cache[: reply["prompt_eval_count"]])
        assert prompt == layout(tok, HISTORY)
        # the answer's tokens were fed back one by one; the stop id ended it and was never fed
        assert list(svc.engine.cache[len(prompt) :]) == tok.encode(ANSWER)
        assert stop_id not in svc.engine.cache[len(prompt) :]
        assert reply["eval_count"] == len(tok.encode(ANSWER))
        status, out = curl(
            svc.socket,
            "/v1/chat/completions",
            json.dumps({"model": "scripted", "messages": HISTORY[-1:]}),
        )
        assert status == 200, out
        choice = json.loads(out)["choices"][0]
        assert choice["message"]["content"] == ANSWER and choice["finish_reason"] == "stop"
