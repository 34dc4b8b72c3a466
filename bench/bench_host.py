"""Host engine on the embedded SmolLM2-135M: our KV-cache loop vs transformers, and prefix reuse.

1. Decode tokens/s of the hand-written loop vs `model.generate` (no streamer) and `generate` +
   `TextIteratorStreamer`, same prompt, same number of new tokens, greedy (target: loop >= generate).
2. Time to first token at turn 5 / turn 1 of a conversation with about 1,000 tokens of history, with
   prefix reuse (target < 1.3) and without (to show the difference).
Medians over several runs, all measured in this one process.
"""

from __future__ import annotations

import statistics
import threading
import time

import torch
from transformers import GenerationConfig, TextIteratorStreamer

from appliance.bench_runner import TurnRow, bench_turns, filler_text, warm_up
from appliance.generation.types import Finished, GenerationOptions, Message
from appliance.models.loader import load_model

NEW_TOKENS = 64
RUNS = 5
RUNS_TURNS = 3


def loop_tps(gen, messages) -> float:  # type: ignore[no-untyped-def]
    options = GenerationOptions(max_new_tokens=NEW_TOKENS, ignore_eos=True)
    gen.reset()
    final = next(e for e in gen.generate(messages, options) if isinstance(e, Finished))
    return final.timings.tokens_per_second


def generate_tps(model, ids: list[int], streamer: bool, tokenizer=None) -> float:  # type: ignore[no-untyped-def]
    config = GenerationConfig(
        do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0
    )
    x = torch.tensor([ids])
    mask = torch.ones_like(x)
    # decode speed = (new tokens - 1) / (total - time of the first token), as the loop measures it
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(
            x,
            attention_mask=mask,
            generation_config=GenerationConfig(do_sample=False, max_new_tokens=1, pad_token_id=0),
        )
        first = time.perf_counter() - start
        if streamer:
            s = TextIteratorStreamer(tokenizer)
            start = time.perf_counter()
            t = threading.Thread(
                target=model.generate,
                kwargs={"inputs": x, "attention_mask": mask, "generation_config": config, "streamer": s},
            )
            t.start()
            for _ in s:
                pass
            t.join()
        else:
            start = time.perf_counter()
            model.generate(x, attention_mask=mask, generation_config=config)
        total = time.perf_counter() - start
    return (NEW_TOKENS - 1) / max(total - first, 1e-9)


def median_turns(runs: list[list[TurnRow]]) -> list[TurnRow]:
    """Per turn, the run with the median time to first token."""
    out = []
    for rows in zip(*runs, strict=True):
        ordered = sorted(rows, key=lambda r: r.first_token_s)
        out.append(ordered[len(ordered) // 2])
    return out


def main() -> int:
    loaded = load_model(None)
    gen = loaded.generator
    model = loaded.engine._model  # the same weights, for transformers' own generate
    hf_tok = __import__("transformers").AutoTokenizer.from_pretrained(loaded.details["path"])
    messages = [Message("user", filler_text(gen, 32))]
    ids = gen.prompt_ids(messages, GenerationOptions())
    warm_up(gen)
    ours, plain, streamed = [], [], []
    for _ in range(RUNS):
        ours.append(loop_tps(gen, messages))
        plain.append(generate_tps(model, ids, streamer=False))
        streamed.append(generate_tps(model, ids, streamer=True, tokenizer=hf_tok))
    o, p, s = statistics.median(ours), statistics.median(plain), statistics.median(streamed)
    print(
        f"threads {torch.get_num_threads()}, prompt {len(ids)} tokens, {NEW_TOKENS} new tokens, median of {RUNS}"
    )
    print(f"decode tok/s: our loop {o:.1f} | generate {p:.1f} | generate + TextIteratorStreamer {s:.1f}")
    print(f"ratio loop / generate = {o / p:.2f} (target >= 1.0)")

    gen_no_reuse = load_model(None, prefix_reuse=False).generator
    with_reuse = median_turns([bench_turns(gen, 5, 200, 32) for _ in range(RUNS_TURNS)])
    without = median_turns([bench_turns(gen_no_reuse, 5, 200, 32) for _ in range(RUNS_TURNS)])
    print(f"multi-turn, median per turn over {RUNS_TURNS} conversations")
    print("turn | prompt tokens | TTFT reuse (s) | prefilled | TTFT no reuse (s)")
    for a, b in zip(with_reuse, without, strict=True):
        print(
            f"{a.turn:>4} | {a.prompt_tokens:>13} | {a.first_token_s:>14.3f} | {a.prefilled_tokens:>9} "
            f"| {b.first_token_s:>17.3f}"
        )
    r1 = with_reuse[-1].first_token_s / with_reuse[0].first_token_s
    r2 = without[-1].first_token_s / without[0].first_token_s
    print(f"TTFT turn 5 / turn 1: with prefix reuse {r1:.2f} (target < 1.3), without {r2:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
