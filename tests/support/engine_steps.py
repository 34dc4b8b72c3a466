"""Greedy decoding through an Engine, step by step (shared by the cmodel tests)."""

from __future__ import annotations

from appliance.engine.protocol import Engine


def greedy_tokens(engine: Engine, ids: list[int], n: int) -> list[int]:
    engine.truncate(0)
    out = engine.prefill(ids)
    toks = [out.token]
    while len(toks) < n:
        assert toks[-1] is not None
        toks.append(engine.decode(toks[-1]).token)
    return [int(t) for t in toks if t is not None]
