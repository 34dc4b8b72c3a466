"""Chat templates produce the documented token layouts and stop ids (sophgo-facts.md section 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from appliance.errors import InvalidRequest, ModelFormatError
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Message

IM_START, IM_END, EOT = 2046, 2047, 2045
CONVERSATION = [
    Message("user", "Hi, Ada!"),
    Message("assistant", "City quiet train."),
    Message("user", "A night quiet loads the stone."),
]


@pytest.fixture(scope="module")
def tok(tiny_hf: Path) -> ChatTokenizer:
    return ChatTokenizer.from_dir(tiny_hf)


def test_tokenizer_template_equals_transformers(tok: ChatTokenizer, tiny_hf: Path) -> None:
    hf = AutoTokenizer.from_pretrained(str(tiny_hf))
    template = make_template("tokenizer", tok)
    for messages in (CONVERSATION, [Message("system", "Be brief."), *CONVERSATION]):
        raw = [{"role": m.role, "content": m.content} for m in messages]
        want = hf.apply_chat_template(raw, add_generation_prompt=True, tokenize=True)["input_ids"]
        assert template.render(messages) == list(want)
    assert template.stop_ids == {IM_END, EOT}  # tokenizer eos + generation_config eos_token_id list


def test_chatml_layout(tok: ChatTokenizer) -> None:
    template = make_template("chatml", tok)
    ids = template.render(CONVERSATION)
    nl = tok.encode("\n")
    assert ids[0] == IM_START
    assert ids[1 : 1 + len(tok.encode("system\nYou are a helpful assistant."))] == tok.encode(
        "system\nYou are a helpful assistant."
    )
    assert ids.count(IM_START) == 5 and ids.count(IM_END) == 4
    assert ids[-1 - len(tok.encode("assistant\n")) :] == [IM_START, *tok.encode("assistant\n")]
    first_end = ids.index(IM_END)
    assert ids[first_end + 1 : first_end + 1 + len(nl)] == nl
    # the fixture's own chat_template is ChatML too: both renderings agree token for token
    assert ids == make_template("tokenizer", tok).render(CONVERSATION)
    assert template.stop_ids == {IM_END, EOT}


def test_baichuan2_layout(tok: ChatTokenizer) -> None:
    template = make_template("baichuan2", tok)
    system = [Message("system", "Be brief.")]
    ids = template.render([*system, *CONVERSATION])
    want = [
        *tok.encode("Be brief."),
        195,
        *tok.encode("Hi, Ada!"),
        196,
        *tok.encode("City quiet train."),
        195,
        *tok.encode("A night quiet loads the stone."),
        196,
    ]
    assert ids == want
    assert template.stop_ids == {2}


def test_wizardcoder_is_single_turn_alpaca(tok: ChatTokenizer) -> None:
    template = make_template("wizardcoder", tok)
    text = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nA night quiet loads the stone.\n\n### Response:"
    )
    assert template.render(CONVERSATION) == tok.encode(text)
    assert template.stop_ids == {EOT}  # the tokenizer's <|endoftext|> (WizardCoder's is id 0)
    assert not template.multi_turn


def test_unknown_template_and_missing_chat_template(tok: ChatTokenizer) -> None:
    with pytest.raises(ModelFormatError, match="unknown chat template"):
        make_template("nope", tok)
    bare = ChatTokenizer(backend=tok.backend, chat_template=None, source="somewhere")
    with pytest.raises(ModelFormatError, match="no chat_template"):
        make_template("tokenizer", bare)


def test_template_raise_exception_becomes_invalid_request(tok: ChatTokenizer) -> None:
    strict = ChatTokenizer(
        backend=tok.backend,
        chat_template="{% if messages[-1]['role'] != 'user' %}{{ raise_exception('last must be user') }}{% endif %}x",
    )
    template = make_template("tokenizer", strict)
    with pytest.raises(InvalidRequest, match="last must be user"):
        template.render([Message("assistant", "hi")])


def test_corrupt_tokenizer_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not a valid tokenizer"):
        ChatTokenizer.from_dir(tmp_path)
