"""Host-side sampling on logits, and drawing from a device head's candidates.

The repetition penalty follows the vendor heads (sophgo-facts.md section 3): for each id among the
last ``repeat_last_n`` tokens, a negative logit is multiplied by the penalty and a positive one divided
by it. Then temperature, top-k, top-p (nucleus, at least one candidate kept), and a draw from a seeded
generator, so that a seed reproduces an answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from appliance.generation.structured import JsonConstraint
from appliance.generation.types import GenerationOptions

__all__ = ["Sampler", "apply_additive_penalties", "apply_repetition_penalty", "candidate_distribution"]

FloatArray = npt.NDArray[np.float32]


def apply_repetition_penalty(logits: FloatArray, recent: Sequence[int], penalty: float) -> FloatArray:
    """Vendor semantics: negative logits multiplied, positive divided, each id once."""
    if penalty == 1.0 or not recent:
        return logits
    out = logits.copy()
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    ids = ids[(ids >= 0) & (ids < out.shape[0])]
    values = out[ids]
    out[ids] = np.where(values < 0, values * penalty, values / penalty)
    return out


def apply_additive_penalties(
    logits: FloatArray, counts: dict[int, int], *, presence: float, frequency: float
) -> FloatArray:
    """OpenAI semantics: each id generated so far loses ``presence`` once and ``frequency`` per occurrence."""
    if not counts or (presence == 0.0 and frequency == 0.0):
        return logits
    out = logits.copy()
    ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    n = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    inside = (ids >= 0) & (ids < out.shape[0])
    out[ids[inside]] -= presence + frequency * n[inside]
    return out


def candidate_distribution(
    logits: FloatArray, *, temperature: float, top_k: int, top_p: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The ids that may be drawn and their probabilities (sorted by probability, descending)."""
    scaled = logits.astype(np.float64) / max(temperature, 1e-6)
    k = scaled.shape[0] if top_k <= 0 else min(top_k, scaled.shape[0])
    ids = np.argpartition(-scaled, k - 1)[:k] if k < scaled.shape[0] else np.arange(scaled.shape[0])
    ids = ids[np.argsort(-scaled[ids], kind="stable")]
    probs = np.exp(scaled[ids] - scaled[ids[0]])
    probs /= probs.sum()
    if top_p < 1.0:
        cumulative = np.cumsum(probs)
        # keep the smallest prefix whose mass reaches top_p (the token that crosses it included)
        keep = int(np.searchsorted(cumulative, top_p, side="left")) + 1
        ids, probs = ids[:keep], probs[:keep]
        probs = probs / probs.sum()
    return ids, probs


class Sampler:
    """Chooses the next token from logits or candidates according to GenerationOptions."""

    def __init__(self, options: GenerationOptions, constraint: JsonConstraint | None = None) -> None:
        self.options = options
        self.constraint = constraint  # structured output: a grammar masks the logits before the draw
        self.rng = np.random.default_rng(options.seed)
        self.counts: dict[int, int] = {}  # ids drawn from logits so far (the additive penalties' input)

    def recent(self, context: Sequence[int]) -> Sequence[int]:
        n = self.options.repeat_last_n
        return context[-n:] if n else ()

    def from_logits(self, logits: FloatArray, context: Sequence[int]) -> int:
        opts = self.options
        logits = apply_repetition_penalty(logits, self.recent(context), opts.repetition_penalty)
        logits = apply_additive_penalties(
            logits, self.counts, presence=opts.presence_penalty, frequency=opts.frequency_penalty
        )
        if self.constraint is not None:
            logits = self.constraint.mask(logits)
        if opts.is_greedy:
            token = int(np.argmax(logits))
        else:
            ids, probs = candidate_distribution(
                logits, temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p
            )
            token = int(ids[self.rng.choice(len(ids), p=probs)])
        self.counts[token] = self.counts.get(token, 0) + 1
        if self.constraint is not None and token not in self.constraint.vocab.stop_ids:
            self.constraint.advance(token)
        return token

    def from_candidates(self, probs: FloatArray, ids: npt.NDArray[np.int64]) -> int:
        """Draw from a device head's (probabilities, ids); entries with probability 0 are never drawn."""
        p = np.asarray(probs, dtype=np.float64)
        p = np.where(p > 0, p, 0.0)
        total = p.sum()
        if total <= 0:
            return int(ids[0])
        return int(ids[self.rng.choice(len(p), p=p / total)])
