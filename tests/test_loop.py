"""The generation loop: prefix reuse, stops, cancellation, timings, notices and bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from appliance.engine.host import HostEngine
from appliance.engine.protocol import Capabilities
from appliance.engine.scripted import ScriptedEngine
from appliance.errors import ContextOverflow, InvalidRequest
from appliance.generation.loop import Generator
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import (
    Finished,
    GenerationEvent,
    GenerationOptions,
    Message,
    Notice,
    validate_messages,
)


@pytest.fixture(scope="module")
def tok(tiny_hf: Path) -> ChatTokenizer:
    return ChatTokenizer.from_dir(tiny_hf)


@pytest.fixture(scope="module", params=["none", "int8", "int4"])
def host(
    request: pytest.FixtureRequest, tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory
) -> HostEngine:
    """The host engine in each weight mode (model.host_quant): prefix reuse must be exact in all."""
    return HostEngine(tiny_hf, threads=1, quant=request.param, quant_cache=tmp_path_factory.mktemp("quant"))


def finish(events: list[GenerationEvent]) -> Finished:
    assert isinstance(events[-1], Finished)
    assert sum(isinstance(e, Finished) for e in events) == 1
    return events[-1]


def run(gen: Generator, msgs: list[Message], **opts: object) -> Finished:
    return finish(list(gen.generate(msgs, GenerationOptions(**{"temperature": 0.0, **opts}))))  # type: ignore[arg-type]


def test_prefix_reuse_equals_full_prefill(host: HostEngine, tok: ChatTokenizer) -> None:
    template = make_template("tokenizer", tok)
    reuse = Generator(host, tok, template)
    turn1 = [Message("user", "City quiet train loads writes.")]
    first = run(reuse, turn1, max_new_tokens=6, ignore_eos=True)
    turn2 = [*turn1, Message("assistant", first.text), Message("user", "Green moon teacher.")]
    second = run(reuse, turn2, max_new_tokens=8, ignore_eos=True)
    assert second.timings.reused_tokens > first.timings.prompt_tokens
    assert second.timings.prompt_eval_count == second.timings.prompt_tokens - second.timings.reused_tokens
    fresh = Generator(host, tok, template, prefix_reuse=False)
    again = run(fresh, turn2, max_new_tokens=8, ignore_eos=True)
    assert again.timings.reused_tokens == 0
    assert again.token_ids == second.token_ids


def test_same_prompt_twice_reprefills_only_the_last_token(host: HostEngine, tok: ChatTokenizer) -> None:
    gen = Generator(host, tok, make_template("tokenizer", tok))
    msgs = [Message("user", "A night quiet loads the stone.")]
    a = run(gen, msgs, max_new_tokens=5, ignore_eos=True)
    b = run(gen, msgs, max_new_tokens=5, ignore_eos=True)
    assert b.timings.prompt_eval_count == 1
    assert a.token_ids == b.token_ids


def test_stops_on_stop_id_length_and_context(tok: ChatTokenizer) -> None:
    words = tok.encode(" apple green moon")
    engine = ScriptedEngine([*words, 2047], vocab_size=2048, max_seq_len=64)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    msgs = [Message("user", "hi")]
    stopped = run(gen, msgs, max_new_tokens=50)
    assert stopped.done_reason == "stop" and stopped.text == " apple green moon"
    assert 2047 not in stopped.token_ids
    cut = run(gen, msgs, max_new_tokens=2)
    assert cut.done_reason == "length" and cut.timings.eval_count == 2
    full = run(gen, msgs, max_new_tokens=500, ignore_eos=True, reserve_tokens=4)
    assert full.done_reason == "context"
    assert engine.n_past == 64  # filled exactly, never past the limit
    assert full.timings.prompt_tokens + full.timings.eval_count == 65  # the last token is returned, not fed


def test_cancellation_stops_within_one_token(tok: ChatTokenizer) -> None:
    engine = ScriptedEngine(tok.encode(" apple green moon teacher"), vocab_size=2048, max_seq_len=512)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    final = finish(list(gen.generate([Message("user", "hi")], GenerationOptions(), should_stop=should_stop)))
    assert final.done_reason == "cancelled"
    assert final.timings.eval_count == 3
    assert engine.decode_calls == 2


def test_timings_are_filled(host: HostEngine, tok: ChatTokenizer) -> None:
    gen = Generator(host, tok, make_template("tokenizer", tok), load_duration_ns=123)
    host.truncate(0)
    t = run(gen, [Message("user", "Hi, Ada!")], max_new_tokens=4, ignore_eos=True).timings
    assert t.load_duration == 123 and t.eval_count == 4 and t.prompt_eval_count == t.prompt_tokens > 0
    assert 0 < t.time_to_first_token <= t.total_duration and t.eval_duration > 0
    again = run(gen, [Message("user", "Hi, Ada!")], max_new_tokens=1).timings
    assert again.load_duration == 0  # reported once, by the first response after the load


def test_notice_when_turns_are_dropped(tok: ChatTokenizer) -> None:
    engine = ScriptedEngine(tok.encode(" ok"), vocab_size=2048, max_seq_len=64)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    msgs: list[Message] = []
    for i in range(6):
        msgs += [
            Message("user", f"question {i} about the river"),
            Message("assistant", "answer about the stone"),
        ]
    msgs.append(Message("user", "last one"))
    events = list(gen.generate(msgs, GenerationOptions(max_new_tokens=4)))
    notices = [e for e in events if isinstance(e, Notice)]
    final = finish(events)
    assert len(notices) == 1 and "dropped" in notices[0].message
    assert final.dropped_turns > 0


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "messages is empty"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
        ([{"role": "robot", "content": "a"}], "role"),
        ([{"role": "user", "content": 5}], "must be a string"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "user", "content": "b"},
            ],
            "system",
        ),
        (["hello"], "not an object"),
    ],
)
def test_bad_messages(messages: list[object], match: str) -> None:
    # Checked once, where a history enters (the request schemas, the CLI); the loop takes Messages.
    with pytest.raises(InvalidRequest, match=match):
        validate_messages(messages)  # type: ignore[arg-type]


def test_message_over_the_context(tok: ChatTokenizer) -> None:
    gen = Generator(
        ScriptedEngine([5], vocab_size=2048, max_seq_len=64), tok, make_template("tokenizer", tok)
    )
    with pytest.raises(ContextOverflow):
        list(gen.generate([Message("user", "river " * 100)]))


class _TokensOnlyEngine(ScriptedEngine):
    """Stands in for a bmodel with a fused greedy head (tokens, no logits): no TPU here."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, returns_logits=False)


def test_additive_penalties_need_logits(tok: ChatTokenizer) -> None:
    template = make_template("tokenizer", tok)
    script = tok.encode("a b c")
    penalized = GenerationOptions(presence_penalty=1.0, frequency_penalty=0.5)
    Generator(ScriptedEngine(script, vocab_size=tok.vocab_size), tok, template).refuse_unsupported(penalized)
    tokens_only = Generator(_TokensOnlyEngine(script, vocab_size=tok.vocab_size), tok, template)
    tokens_only.refuse_unsupported(GenerationOptions())  # nothing asked that it cannot do
    with pytest.raises(InvalidRequest, match="presence_penalty and frequency_penalty: this model's engine"):
        tokens_only.refuse_unsupported(penalized)


def test_raw_prompt_is_tokenized_as_is(tok: ChatTokenizer) -> None:
    engine = ScriptedEngine(tok.encode("x y"), vocab_size=tok.vocab_size)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    fin = run(gen, [Message("user", "Once upon a time")], max_new_tokens=2, raw_prompt=True)
    assert fin.timings.prompt_tokens == len(tok.encode("Once upon a time"))
    with pytest.raises(ContextOverflow, match="the prompt has"):
        run(gen, [Message("user", "word " * 5000)], max_new_tokens=2, raw_prompt=True)
