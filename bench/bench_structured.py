"""Cost of structured output on the host: building the grammar vocabulary once, and the mask per step.

The budget per step is 1 ms (3% of a 1.8B int4 decode step on an SE7, 31 ms). Runs on the tiny-qwen2
fixture tokenizer (2k tokens) and on any model directories given (a real 150k-token vocabulary shows the
real cost). Usage: ``.venv/bin/python -m bench.bench_structured [MODEL_DIR ...]``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny-qwen2" / "hf"
BUDGET_MS = 1.0
SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array"}},
        "required": ["name", "age"],
    }
)
ANSWER = '{"name": "Ada Lovelace", "age": 36, "tags": ["mathematician", "writer", 1815]}'


def measure(model_dir: Path) -> float:
    """Print the numbers for one tokenizer; return the median mask time in ms."""
    from appliance.generation.structured import GrammarTokenizer, JsonConstraint
    from appliance.generation.tokenizer import ChatTokenizer

    tok = ChatTokenizer.from_dir(model_dir)
    stops = tok.eos_ids or frozenset({0})
    t = time.perf_counter()
    vocab = GrammarTokenizer(tok, n_vocab=tok.vocab_size, stop_ids=stops)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    constraint = JsonConstraint(vocab, SCHEMA)
    compile_ms = (time.perf_counter() - t) * 1e3
    logits = np.zeros(vocab.n_vocab, np.float32)
    steps = []
    for token in tok.encode(ANSWER):
        t = time.perf_counter()
        constraint.mask(logits)
        steps.append((time.perf_counter() - t) * 1e3)
        constraint.advance(token)
    median = statistics.median(steps)
    print(
        f"{model_dir.name}: vocab {tok.vocab_size}, grammar vocabulary {build_s:.2f} s (once per model), "
        f"schema {compile_ms:.2f} ms, mask median {median:.3f} ms max {max(steps):.3f} ms over {len(steps)} steps"
    )
    return median


def main(argv: list[str] | None = None) -> int:
    dirs = [FIXTURE, *(Path(a) for a in (argv if argv is not None else sys.argv[1:]))]
    worst = max(measure(d) for d in dirs)
    print(f"structured output mask: worst median {worst:.3f} ms per step (budget {BUDGET_MS} ms)")
    return 0 if worst <= BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
