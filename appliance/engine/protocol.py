"""The engine protocol: what the generation loop needs from host, bmrt and sail engines.

An engine turns token ids into the next token's logits (or, when a device head does the choosing,
into a token or a candidate list) and owns the KV cache. Everything else (templates, windowing,
sampling policy, stops, streaming) belongs to the generation loop.

Positions: the engine holds ``n_past`` positions in its KV cache. :meth:`Engine.prefill` appends
``ids`` at positions ``n_past .. n_past+len(ids)-1`` and returns the output for the last of them;
:meth:`Engine.decode` appends one token. :meth:`Engine.truncate` drops positions ``>= n`` so that the
loop can reuse a common prefix; an engine that cannot continue from an arbitrary position says so
through :attr:`Capabilities.prefix_reuse` and the loop then re-prefills from zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "Capabilities",
    "DeviceSampling",
    "Engine",
    "EngineInfo",
    "EngineLimits",
    "StepOutput",
]


@dataclass(frozen=True)
class EngineLimits:
    """Hard limits of a loaded model."""

    max_seq_len: int  # positions the KV cache holds; generation stops before reaching it
    vocab_size: int


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; the loop adapts to it."""

    returns_logits: bool  # False: the engine only returns tokens (fused greedy lm_head)
    device_sampling: bool = False  # a device head samples with vendor penalty semantics
    prefix_reuse: bool = True  # truncate(n) with 0 < n < n_past keeps a usable cache

    @property
    def greedy_only(self) -> bool:
        """A fused greedy head and no device sampler: sampling options cannot change the answer."""
        return not self.returns_logits and not self.device_sampling


@dataclass(frozen=True)
class EngineInfo:
    """Identity of a loaded engine, for status output."""

    kind: str  # "host" | "bmrt" | "sail" | "echo" ...
    model_path: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceSampling:
    """Sampling request handed to an engine with a device sample head.

    ``recent_ids`` are the last ``repeat_last_n`` token ids (vendor semantics: padded with the last id
    by the engine when shorter). An engine without a device head ignores this and returns logits.
    """

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    recent_ids: tuple[int, ...]


@dataclass(frozen=True)
class StepOutput:
    """The result of one prefill or decode step: exactly one of the three fields is set.

    - ``logits``: float32 [vocab] for the last position; the loop samples on the host.
    - ``token``: the engine chose the token (greedy head, or device sampling that drew it).
    - ``candidates``: (probs float32 [k], ids int [k]) from a device sample head; the loop draws one.
    """

    logits: npt.NDArray[np.float32] | None = None
    token: int | None = None
    candidates: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None


@runtime_checkable
class Engine(Protocol):
    """A loaded model that runs prefill and decode steps. Not thread-safe: one caller at a time."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def limits(self) -> EngineLimits: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def n_past(self) -> int:
        """Number of positions held in the KV cache."""
        ...

    def prefill(self, ids: Sequence[int], sampling: DeviceSampling | None = None) -> StepOutput:
        """Append ``ids`` (at least one) after the cached positions; output for the last one.

        ``sampling`` None means greedy. Raises ContextOverflow when n_past + len(ids) > max_seq_len.
        """
        ...

    def decode(self, token: int, sampling: DeviceSampling | None = None) -> StepOutput:
        """Append one token at position n_past; output for it."""
        ...

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` positions (0 resets). Always valid for n == 0."""
        ...

    def close(self) -> None:
        """Free the model and device memory. Idempotent."""
        ...
