"""Sampling on crafted logits: candidate sets, penalty semantics, seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.errors import InvalidRequest
from appliance.generation.sampling import (
    Sampler,
    apply_additive_penalties,
    apply_repetition_penalty,
    candidate_distribution,
)
from appliance.generation.types import GenerationOptions

LOGITS = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0], dtype=np.float32)


def draws(options: GenerationOptions, logits: np.ndarray = LOGITS, n: int = 400) -> set[int]:
    s = Sampler(options)
    return {s.from_logits(logits, []) for _ in range(n)}


def test_greedy_is_argmax() -> None:
    assert draws(GenerationOptions().greedy(), n=5) == {0}
    assert draws(GenerationOptions(temperature=2.0, top_k=1), n=20) == {0}


def test_top_k_limits_candidates() -> None:
    assert draws(GenerationOptions(temperature=5.0, top_k=3)) == {0, 1, 2}


def test_top_p_keeps_smallest_nucleus() -> None:
    ids, probs = candidate_distribution(LOGITS, temperature=1.0, top_k=0, top_p=0.9)
    full = np.exp(LOGITS - LOGITS.max()) / np.exp(LOGITS - LOGITS.max()).sum()
    # 0.636 + 0.234 = 0.870 < 0.9, so the third token is needed, the fourth is not
    assert full[0] + full[1] < 0.9 <= full[0] + full[1] + full[2]
    assert ids.tolist() == [0, 1, 2]
    assert probs.sum() == pytest.approx(1.0)
    assert draws(GenerationOptions(temperature=1.0, top_p=0.9), n=600) == {0, 1, 2}


def test_top_p_always_keeps_one() -> None:
    ids, _ = candidate_distribution(LOGITS, temperature=1.0, top_k=0, top_p=1e-9)
    assert ids.tolist() == [0]


def test_repetition_penalty_vendor_semantics() -> None:
    out = apply_repetition_penalty(LOGITS, [0, 6, 6, 99], 2.0)
    assert out[0] == pytest.approx(2.5)  # positive: divided
    assert out[6] == pytest.approx(-2.0)  # negative: multiplied
    assert out[1] == LOGITS[1]
    # the penalty can change the greedy choice; only the recent window counts
    s = Sampler(GenerationOptions(temperature=0.0, repetition_penalty=3.0, repeat_last_n=2))
    assert s.from_logits(LOGITS, [0, 5, 5]) == 0  # 0 is outside the last 2
    assert s.from_logits(LOGITS, [5, 0]) == 1


def _sequence(seed: int) -> list[int]:
    s = Sampler(GenerationOptions(temperature=3.0, seed=seed))
    return [s.from_logits(LOGITS, []) for _ in range(50)]


def test_seed_reproducible_and_distinct() -> None:
    assert _sequence(42) == _sequence(42)
    assert _sequence(42) != _sequence(43)


def test_candidates_with_zero_probability_are_never_drawn() -> None:
    s = Sampler(GenerationOptions(temperature=1.0, seed=1))
    probs = np.array([0.5, 0.5, 0.0, 0.0], dtype=np.float32)
    ids = np.array([10, 11, 12, 13])
    assert {s.from_candidates(probs, ids) for _ in range(200)} == {10, 11}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"max_new_tokens": 0},
        {"repetition_penalty": 0},
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidRequest):
        GenerationOptions(**kwargs)  # type: ignore[arg-type]


def test_additive_penalties_openai_semantics() -> None:
    logits = np.array([5.0, 4.5, 1.0, 0.0], dtype=np.float32)
    out = apply_additive_penalties(logits, {0: 3, 2: 1}, presence=0.5, frequency=0.25)
    assert out.tolist() == [5.0 - 0.5 - 0.75, 4.5, 1.0 - 0.5 - 0.25, 0.0]
    assert logits[0] == 5.0  # the input is untouched
    sampler = Sampler(GenerationOptions(temperature=0.0, repetition_penalty=1.0, frequency_penalty=2.0))
    picks = [sampler.from_logits(logits, []) for _ in range(3)]
    assert picks == [0, 1, 0]  # 0 loses 2 after its first draw (3.0 < 4.5), 1 then loses 2 (2.5 < 3.0)
