"""`llm-tpu bench`: first-token latency and decode speed, like the vendor's table; multi-turn mode."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from appliance.bench_runner import bench_prompts, bench_turns
from appliance.cli.options import add_model_options, config_from_args
from appliance.models.loader import load_model


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("prompt lengths must be positive numbers")
    return values


def run(args: argparse.Namespace) -> int:
    loaded = load_model(config_from_args(args).model, prefix_reuse=not args.no_reuse)
    gen = loaded.generator
    if args.turns:
        turn_rows = bench_turns(gen, args.turns, args.user_tokens, args.gen_tokens)
        if args.json:
            print(json.dumps({"model": loaded.name, "turns": [asdict(r) for r in turn_rows]}, indent=2))
        else:
            reuse = "off" if args.no_reuse else "on"
            print(f"model {loaded.name}, engine {loaded.engine.info.kind}, prefix reuse {reuse}")
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
        print(json.dumps({"model": loaded.name, "rows": [asdict(r) for r in table]}, indent=2))
        return 0
    print("| model | engine | prompt tokens | new tokens | first token latency (s) | tokens/s |")
    print("|-------|--------|--------------:|-----------:|------------------------:|---------:|")
    for r in table:
        print(
            f"| {loaded.name} | {loaded.engine.info.kind} | {r.prompt_tokens} | {r.new_tokens} "
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
    p.set_defaults(func=run)
