"""History windowing keeps whole turns, the system prompt and the new message, and fits the limit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from appliance.errors import ContextOverflow
from appliance.generation.templates import ChatTemplate, make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Message
from appliance.generation.window import fit_history, split_turns

WORDS = [
    "city",
    "quiet",
    "train",
    "loads",
    "writes",
    "ocean",
    "apple",
    "green",
    "moon",
    "teacher",
    "night",
    "stone",
    "river",
    "bright",
]


@pytest.fixture(scope="module")
def template(tiny_hf: Path) -> ChatTemplate:
    return make_template("tokenizer", ChatTokenizer.from_dir(tiny_hf))


def conversation(rng: random.Random, turns: int, system: bool) -> list[Message]:
    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))

    msgs = [Message("system", "Be brief.")] if system else []
    for _ in range(turns):
        msgs += [Message("user", text()), Message("assistant", text())]
    return [*msgs, Message("user", text())]


def test_window_properties_on_random_conversations(template: ChatTemplate) -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(150):
        system = rng.random() < 0.5
        msgs = conversation(rng, rng.randint(0, 8), system)
        limit, reserve = rng.randint(40, 200), rng.randint(1, 30)
        try:
            w = fit_history(msgs, template, max_seq_len=limit, reserve=reserve)
        except ContextOverflow:
            head = msgs[:1] if system else []
            assert len(template.render([*head, msgs[-1]])) + reserve > limit
            continue
        checked += 1
        assert len(w.prompt_ids) + reserve <= limit
        assert list(w.prompt_ids) == template.render(w.messages)
        assert w.messages[-1] == msgs[-1]
        if system:
            assert w.messages[0] == msgs[0]
        body = w.messages[1:] if system else w.messages
        assert body[0].role == "user"  # never starts with an assistant turn
        assert list(body) == msgs[len(msgs) - len(body) :]  # a suffix of whole turns
        assert len(body) % 2 == 1
        assert w.dropped_turns == (len(msgs) - (1 if system else 0) - len(body)) // 2
        if w.dropped_turns:  # maximal: one more turn would not fit
            extra = msgs[len(msgs) - len(body) - 2 :]
            head = msgs[:1] if system else []
            assert len(template.render([*head, *extra])) + reserve > limit
    assert checked > 50


def test_new_message_alone_too_long(template: ChatTemplate) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "apple " * 80)]
    with pytest.raises(ContextOverflow, match="the new message needs") as err:
        fit_history(msgs, template, max_seq_len=64, reserve=8)
    assert err.value.hint


def test_split_turns_groups_answers_with_questions() -> None:
    msgs = [Message("system", "s"), Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    system, turns = split_turns(msgs)
    assert system == msgs[0]
    assert turns == [[msgs[1], msgs[2]], [msgs[3]]]
