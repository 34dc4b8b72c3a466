"""Incremental text never contains U+FFFD for split characters; stop strings are cut exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.engine.scripted import ScriptedEngine
from appliance.generation.loop import Generator
from appliance.generation.templates import make_template
from appliance.generation.textstream import IncrementalDecoder, StopStringFilter
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Finished, GenerationOptions, Message, TextDelta

TEXT = "Grüße aus 東京 🙂🎉 and ünïcödé — done"


@pytest.fixture(scope="module")
def tok(tiny_hf: Path) -> ChatTokenizer:
    return ChatTokenizer.from_dir(tiny_hf)


def test_multibyte_characters_are_split_across_tokens(tok: ChatTokenizer) -> None:
    ids = tok.encode(TEXT)
    partial = [tok.decode(ids[:i]) for i in range(1, len(ids))]
    assert any(p.endswith("\ufffd") for p in partial)  # the byte-level tokenizer does split them


def test_incremental_decoder_never_emits_replacement(tok: ChatTokenizer) -> None:
    dec = IncrementalDecoder(tok)
    chunks = [dec.push(t) for t in tok.encode(TEXT)]
    chunks.append(dec.flush())
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == TEXT
    assert sum(1 for c in chunks if c) > 10  # it streams, it does not buffer everything


def test_generator_streams_multibyte_text(tok: ChatTokenizer) -> None:
    engine = ScriptedEngine([*tok.encode(TEXT), 2047], vocab_size=2048, max_seq_len=512)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    events = list(gen.generate([Message("user", "hi")], GenerationOptions(max_new_tokens=200)))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    final = events[-1]
    assert isinstance(final, Finished)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == final.text == TEXT
    assert final.done_reason == "stop"


def test_stop_string_across_chunks() -> None:
    f = StopStringFilter(["STOP"])
    out = f.feed("Hel") + f.feed("lo ST") + f.feed("OP more")
    assert out == "Hello " and f.stopped


def test_stop_string_prefix_is_released_when_not_a_stop() -> None:
    f = StopStringFilter(["STOP"])
    assert f.feed("a ST") == "a "
    assert f.feed("X") == "STX"
    assert not f.stopped
    assert f.feed("S") == "" and f.flush() == "S"


def test_generator_stop_string(tok: ChatTokenizer) -> None:
    engine = ScriptedEngine(tok.encode("one two three four five"), vocab_size=2048, max_seq_len=512)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    events = list(
        gen.generate([Message("user", "count")], GenerationOptions(max_new_tokens=50, stop=(" thr",)))
    )
    final = events[-1]
    assert isinstance(final, Finished)
    assert final.text == "one two" and final.done_reason == "stop"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two"
