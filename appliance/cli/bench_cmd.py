"""`llm-tpu bench`: first-token latency and decode speed, like the vendor's table; multi-turn mode.

Through the running service when there is one (--service insists on it), else, or with --local, on a
model loaded in this process."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from appliance.bench_runner import BenchTarget, bench_prompts, bench_turns
from appliance.cli.options import add_model_options
from appliance.cli.session import ChatTarget, LocalTarget, ServiceTarget, add_target_options, open_target
from appliance.client import ServiceClient, find_socket
from appliance.errors import InvalidRequest
from appliance.generation.types import Finished, GenerationEvent, GenerationOptions, Message, ollama_options


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("prompt lengths must be positive numbers")
    return values


class _WordCounter:
    """Token counts through the service, which has no tokenize route: tokens per word, measured once
    from two prompts' prompt_tokens, times the words. Good enough to size the filler prompts; the
    table shows the real prompt_tokens the service reports."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self._per_word: float | None = None

    def _prompt_tokens(self, words: int) -> int:
        text = " ".join(["river"] * words)
        final = next(
            e
            for e in self.client.chat_events([{"role": "user", "content": text}], options={"num_predict": 1})
            if isinstance(e, Finished)
        )
        return final.timings.prompt_tokens

    def encode(self, text: str) -> list[int]:
        if self._per_word is None:
            self._per_word = max(0.1, (self._prompt_tokens(65) - self._prompt_tokens(1)) / 64)
        return [0] * round(len(text.split()) * self._per_word)


class ServiceBench:
    """The running service as a benchmark target. Each reset() changes the first words of the next
    prompt, so that the service's prefix reuse cannot skip the prefill being measured."""

    def __init__(self, target: ServiceTarget) -> None:
        self.target = target
        self.tokenizer = _WordCounter(target.client)
        self._run = 0

    def generate(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> Iterator[GenerationEvent]:
        options = options or GenerationOptions()
        wire = [{"role": m.role, "content": m.content} for m in messages]
        if wire and self._run:
            wire[0] = {**wire[0], "content": f"{self._run}: {wire[0]['content']}"}
        requested = {"max_new_tokens": options.max_new_tokens, **_GREEDY}
        return self.target.client.chat_events(wire, options=ollama_options(requested))

    def reset(self) -> None:
        self._run += 1


_GREEDY = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}


def run(args: argparse.Namespace) -> int:
    if args.service and args.local:
        raise InvalidRequest("--service and --local exclude each other", hint="give one of them")
    if args.service:
        args.socket = args.socket or str(find_socket(None))
        client = ServiceClient.for_socket(args.socket)
        client.health()  # ServiceUnavailable with its hint when there is none
        client.close()
    target = open_target(args, prefix_reuse=not args.no_reuse)
    try:
        if isinstance(target, ServiceTarget):
            if args.no_reuse:
                raise InvalidRequest(
                    "--no-reuse needs a model loaded here", hint="add --local (the service always reuses)"
                )
            gen: BenchTarget = ServiceBench(target)
        else:
            assert isinstance(target, LocalTarget)
            gen = target.loaded.generator
        return _report(args, gen, target)
    finally:
        target.close()


def _report(args: argparse.Namespace, gen: BenchTarget, target: ChatTarget) -> int:
    name, engine = target.name, target.engine
    if args.turns:
        turn_rows = bench_turns(gen, args.turns, args.user_tokens, args.gen_tokens)
        if args.json:
            print(json.dumps({"model": name, "turns": [asdict(r) for r in turn_rows]}, indent=2))
        else:
            reuse = "off" if args.no_reuse else "on"
            print(f"model {name}, engine {engine}, prefix reuse {reuse}, in {target.where}")
            print("| turn | prompt tokens | prefilled | first token (s) |")
            print("|-----:|--------------:|----------:|----------------:|")
            for t in turn_rows:
                print(
                    f"| {t.turn:>4} | {t.prompt_tokens:>13} | {t.prefilled_tokens:>9} | {t.first_token_s:>15.3f} |"
                )
            print(
                f"turn {turn_rows[-1].turn} / turn 1 first-token ratio: {turn_rows[-1].first_token_s / turn_rows[0].first_token_s:.2f}"
            )
        return 0
    table = bench_prompts(gen, args.prompt_tokens, args.gen_tokens, args.repeat)
    if args.json:
        print(
            json.dumps({"model": name, "where": target.where, "rows": [asdict(r) for r in table]}, indent=2)
        )
        return 0
    print(f"in {target.where}")
    print("| model | engine | prompt tokens | new tokens | first token latency (s) | tokens/s |")
    print("|-------|--------|--------------:|-----------:|------------------------:|---------:|")
    for r in table:
        print(
            f"| {name} | {engine} | {r.prompt_tokens} | {r.new_tokens} "
            f"| {r.first_token_s:.3f} | {r.tokens_per_s:.1f} |"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure first-token latency and tokens/s",
        description="Measure first-token latency and decode speed (medians), or time to first token per "
        "turn of a multi-turn conversation (--turns).",
    )
    add_model_options(p)
    p.add_argument(
        "--prompt-tokens", type=_lengths, default=[16, 128, 512], help="prompt lengths (16,128,512)"
    )
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens to generate per run (64)")
    p.add_argument("--repeat", type=int, default=3, help="runs per prompt length; medians are shown (3)")
    p.add_argument("--turns", type=int, default=0, help="multi-turn mode: number of turns")
    p.add_argument("--user-tokens", type=int, default=200, help="multi-turn: tokens per user message (200)")
    p.add_argument("--no-reuse", action="store_true", help="multi-turn: disable prefix reuse, for comparison")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_target_options(p)
    p.add_argument(
        "--service",
        action="store_true",
        help="measure through the running service (an error when none runs); the default when one runs",
    )
    p.set_defaults(func=run)
