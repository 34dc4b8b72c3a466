"""A deterministic in-process engine for service tests and overhead benchmarks (no torch, no device).

It implements the Engine protocol faithfully (positions, KV bookkeeping, truncate for prefix reuse,
context limit) but its "model" is a script: the k-th token produced after a prefill is
``script[k % len(script)]``, returned as logits with one clear peak so that host sampling at any
temperature picks it. Optional sleeps per prefilled and per decoded token stand in for device time.
It also counts what it was asked to do, so tests can see prefix reuse and cancellation at work.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from appliance.engine.protocol import (
    Capabilities,
    DeviceSampling,
    EngineInfo,
    EngineLimits,
    StepOutput,
)
from appliance.errors import ContextOverflow, EngineError

__all__ = ["ScriptedEngine", "script_from_text"]


class ScriptTokenizer(Protocol):
    """What the script needs of a tokenizer (generation.tokenizer.ChatTokenizer has it)."""

    def encode(self, text: str) -> list[int]: ...
    def token_to_id(self, token: str) -> int | None: ...


_CONTROL = re.compile(r"(<\|[^<>|\s]+\|>|</?[A-Za-z][^<>\s]*>)")


def script_from_text(tokenizer: ScriptTokenizer, text: str) -> list[int]:
    """Token ids of ``text`` (what the engine will 'say').

    Control tokens written in it (``<|im_end|>``, ``</s>``, ``<|endoftext|>``) become their ids, as a
    model emits them, whatever the tokenizer does with such text in user content.
    """
    ids: list[int] = []
    for part in _CONTROL.split(text):
        control = tokenizer.token_to_id(part) if _CONTROL.fullmatch(part) else None
        ids += [control] if control is not None else tokenizer.encode(part) if part else []
    if not ids:
        raise EngineError("the scripted engine needs a non-empty text", hint="set model.scripted.text")
    return ids


class ScriptedEngine:
    """Emits a fixed token sequence; see the module docstring. Not thread-safe, like every engine."""

    PEAK = 30.0  # logit of the scripted token; all others are 0, so even T=2 picks it (p > 0.999)

    def __init__(
        self,
        script: Sequence[int],
        *,
        vocab_size: int,
        max_seq_len: int = 4096,
        step_delay_s: float = 0.0,
        prefill_delay_per_token_s: float = 0.0,
        model_path: str = "scripted",
        wedge_after_tokens: int | None = None,
    ) -> None:
        if not script:
            raise EngineError("the scripted engine needs at least one token")
        if any(not 0 <= t < vocab_size for t in script):
            raise EngineError(f"scripted token ids must lie in [0, {vocab_size})")
        self._script = tuple(int(t) for t in script)
        self._limits = EngineLimits(max_seq_len=max_seq_len, vocab_size=vocab_size)
        self._info = EngineInfo(
            kind="scripted", model_path=model_path, details={"script_len": str(len(script))}
        )
        self.step_delay_s = step_delay_s
        self.prefill_delay_per_token_s = prefill_delay_per_token_s
        self.wedge_after_tokens = wedge_after_tokens  # a device call that never returns (stall tests)
        self._cache: list[int] = []
        self._k = 0
        self._closed = False
        self._lock = threading.Lock()  # guards the counters tests read from another thread
        self.prefill_calls = 0
        self.prefilled_tokens = 0
        self.decode_calls = 0
        self.last_prefill_len = 0

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def limits(self) -> EngineLimits:
        return self._limits

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            returns_logits=True, device_sampling=False, prefix_reuse=True, incremental_prefill=True
        )

    @property
    def n_past(self) -> int:
        return len(self._cache)

    @property
    def cache(self) -> tuple[int, ...]:
        return tuple(self._cache)

    def _output(self) -> StepOutput:
        logits = np.zeros(self._limits.vocab_size, dtype=np.float32)
        logits[self._script[self._k % len(self._script)]] = self.PEAK
        self._k += 1
        return StepOutput(logits=logits)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the scripted engine was closed")

    def prefill(self, ids: Sequence[int], sampling: DeviceSampling | None = None) -> StepOutput:
        self._check_open()
        if not ids:
            raise EngineError("prefill needs at least one token")
        if len(self._cache) + len(ids) > self._limits.max_seq_len:
            raise ContextOverflow(
                f"{len(self._cache) + len(ids)} positions exceed the context of {self._limits.max_seq_len}"
            )
        if self.prefill_delay_per_token_s:
            time.sleep(self.prefill_delay_per_token_s * len(ids))
        self._cache.extend(int(t) for t in ids)
        with self._lock:
            self.prefill_calls += 1
            self.prefilled_tokens += len(ids)
            self.last_prefill_len = len(ids)
        self._k = 0
        return self._output()

    def decode(self, token: int, sampling: DeviceSampling | None = None) -> StepOutput:
        self._check_open()
        if len(self._cache) + 1 > self._limits.max_seq_len:
            raise ContextOverflow(f"position {len(self._cache)} is outside the context")
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if self.wedge_after_tokens is not None and self.decode_calls >= self.wedge_after_tokens:
            threading.Event().wait()  # like a TPU call that never comes back: only a restart helps
        self._cache.append(int(token))
        with self._lock:
            self.decode_calls += 1
        return self._output()

    def truncate(self, n: int) -> None:
        if n < 0:
            raise EngineError(f"truncate({n}): n must be >= 0")
        del self._cache[n:]

    def close(self) -> None:
        self._closed = True
        self._cache.clear()
