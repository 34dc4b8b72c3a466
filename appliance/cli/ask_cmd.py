"""`llm-tpu ask "..."`: one question, the answer streamed to stdout (from the running service, else a
model loaded here; see appliance.cli.session)."""

from __future__ import annotations

import argparse
import json
import sys

from appliance.cli.options import add_generation_options, add_model_options, requested_options
from appliance.cli.session import add_target_options, open_target
from appliance.generation.types import Finished, Message, Notice, TextDelta, Timings


def usage_record(model: str, final: Finished) -> dict[str, object]:
    t: Timings = final.timings
    return {
        "model": model,
        "response": final.text,
        "done_reason": final.done_reason,
        "usage": {
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.eval_count,
            "total_tokens": t.prompt_tokens + t.eval_count,
            "reused_prompt_tokens": t.reused_tokens,
        },
        "timings": {
            "load_duration": t.load_duration,
            "prompt_eval_count": t.prompt_eval_count,
            "prompt_eval_duration": t.prompt_eval_duration,
            "eval_count": t.eval_count,
            "eval_duration": t.eval_duration,
            "time_to_first_token": t.time_to_first_token,
            "total_duration": t.total_duration,
            "tokens_per_second": round(t.tokens_per_second, 2),
        },
        "dropped_turns": final.dropped_turns,
    }


def run(args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    requested = requested_options(args)  # validate before connecting or loading
    messages = [Message("system", args.system)] if args.system else []
    messages.append(Message("user", prompt))
    target = open_target(args)
    try:
        final: Finished | None = None
        for event in target.events(messages, requested):
            if isinstance(event, TextDelta) and not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, Notice):
                print(f"note: {event.message}", file=sys.stderr)
            elif isinstance(event, Finished):
                final = event
        assert final is not None
        if args.json:
            print(json.dumps(usage_record(target.name, final), ensure_ascii=False))
        else:
            sys.stdout.write("\n")
            if final.done_reason in ("length", "context"):
                print(f"note: the answer was cut ({final.done_reason})", file=sys.stderr)
    finally:
        target.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ask",
        help="ask one question and stream the answer",
        description="Ask one question (from the arguments, or stdin when none) and stream the answer.",
    )
    p.add_argument("prompt", nargs="*", help="the question")
    p.add_argument("--json", action="store_true", help="print one final JSON record with usage and timings")
    add_model_options(p)
    add_generation_options(p)
    add_target_options(p)
    p.set_defaults(func=run)
