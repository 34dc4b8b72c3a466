"""Benchmarks of a loaded model: the vendor-style table and the multi-turn prefix-reuse run.

Used by `llm-tpu bench` and by bench/ (make bench). Prompts are synthetic text of a chosen token
length, so that runs are comparable across models; stop tokens are ignored so every run generates
the same number of tokens.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from appliance.generation.types import Finished, GenerationEvent, GenerationOptions, Message, Timings

__all__ = ["BenchRow", "BenchTarget", "TurnRow", "bench_prompts", "bench_turns", "filler_text"]


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


class BenchTarget(Protocol):
    """What the benchmarks drive: a Generator (a model loaded here) or the service seen through its API."""

    @property
    def tokenizer(self) -> _Encoder: ...

    def generate(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> Iterator[GenerationEvent]: ...

    def reset(self) -> None:
        """Forget the cached conversation, so that the next prompt is prefilled in full."""
        ...


_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "watch",
    "the",
    "quiet",
    "river",
    "and",
    "the",
    "old",
    "teacher",
    "reads",
    "a",
    "long",
    "story",
    "about",
    "mountains",
    "oceans",
    "cities",
    "and",
    "green",
    "apples",
]


def filler_text(gen: BenchTarget, tokens: int, seed: int = 0) -> str:
    """Text that encodes to about ``tokens`` tokens with this tokenizer."""
    words: list[str] = []
    i = seed
    while len(gen.tokenizer.encode(" ".join(words))) < tokens:
        words.extend(_WORDS[(i + k) % len(_WORDS)] for k in range(8))
        i += 3
    while words and len(gen.tokenizer.encode(" ".join(words))) > tokens:
        words.pop()
    return " ".join(words)


def warm_up(gen: BenchTarget) -> None:
    """One short run, so that one-time costs (first forward pass, allocations) stay out of the numbers."""
    _run(gen, [Message("user", filler_text(gen, 8))], GenerationOptions(max_new_tokens=2, ignore_eos=True))
    gen.reset()


def _run(gen: BenchTarget, messages: Sequence[Message], options: GenerationOptions) -> Timings:
    final = None
    for event in gen.generate(messages, options):
        if isinstance(event, Finished):
            final = event
    assert final is not None
    return final.timings


@dataclass(frozen=True)
class BenchRow:
    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    tokens_per_s: float


def bench_prompts(
    gen: BenchTarget, prompt_lengths: Sequence[int], new_tokens: int, repeat: int = 3
) -> list[BenchRow]:
    """For each prompt length: median first-token latency and decode speed over ``repeat`` runs."""
    options = GenerationOptions(max_new_tokens=new_tokens, ignore_eos=True, reserve_tokens=new_tokens)
    rows = []
    warm_up(gen)
    for n in prompt_lengths:
        msgs = [Message("user", filler_text(gen, n))]
        runs = []
        for _ in range(repeat):
            gen.reset()  # a fresh prefill each time: no prefix reuse in this table
            runs.append(_run(gen, msgs, options))
        rows.append(
            BenchRow(
                prompt_tokens=runs[0].prompt_tokens,
                new_tokens=runs[0].eval_count,
                first_token_s=statistics.median(t.time_to_first_token for t in runs) / 1e9,
                tokens_per_s=statistics.median(t.tokens_per_second for t in runs),
            )
        )
    return rows


@dataclass(frozen=True)
class TurnRow:
    turn: int
    prompt_tokens: int
    prefilled_tokens: int
    first_token_s: float


def bench_turns(gen: BenchTarget, turns: int, user_tokens: int, answer_tokens: int) -> list[TurnRow]:
    """A conversation of ``turns`` turns; time to first token of each turn."""
    options = GenerationOptions(max_new_tokens=answer_tokens, ignore_eos=True, reserve_tokens=answer_tokens)
    warm_up(gen)
    history: list[Message] = []
    rows = []
    for turn in range(1, turns + 1):
        history.append(Message("user", filler_text(gen, user_tokens, seed=turn)))
        final = None
        for event in gen.generate(history, options):
            if isinstance(event, Finished):
                final = event
        assert final is not None
        history.append(Message("assistant", final.text))
        t = final.timings
        rows.append(TurnRow(turn, t.prompt_tokens, t.prompt_eval_count, t.time_to_first_token / 1e9))
    return rows
