"""The host engine: transformers + torch on the CPU, for machines without a TPU.

A hand-written KV-cache loop (one forward per token on a DynamicCache, logits of the last position
only) instead of ``generate`` + ``TextIteratorStreamer``: no streamer thread, no per-step logits
processors, and the cache survives between requests so the loop can reuse a conversation's prefix.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance import paths
from appliance.atomic import staged_directory
from appliance.engine.host_quant import cache_key, load_quantized, quantize_model, quantized_state
from appliance.engine.options import HOST_QUANTS
from appliance.engine.protocol import (
    Capabilities,
    DeviceSampling,
    EngineInfo,
    EngineLimits,
    StepOutput,
)
from appliance.errors import ContextOverflow, EngineUnavailable, ModelLoadError

__all__ = ["DEFAULT_MAX_SEQ_LEN", "HostEngine", "host_context", "import_torch"]

DEFAULT_MAX_SEQ_LEN = 4096
QUANT_FILE = "model.safetensors"

log = logging.getLogger(__name__)


def host_context(trained: int, cap: int | None = None) -> int:
    """The positions the host engine's KV cache holds for a model trained for ``trained``: at most
    ``cap`` (default DEFAULT_MAX_SEQ_LEN), since a CPU KV cache of the full trained length is slow."""
    return min(trained or DEFAULT_MAX_SEQ_LEN, cap or DEFAULT_MAX_SEQ_LEN)


_DTYPES = ("float32", "bfloat16", "float16")


def import_torch() -> Any:
    """torch, imported on first use (the host extra), with transformers' progress bars silenced."""
    try:
        import torch
        import transformers
    except ImportError:
        raise EngineUnavailable(
            "the host engine needs torch and transformers, which are not installed",
            hint="pip install 'llm-tpu-appliance[host]' (or run on a box with a TPU)",
        ) from None
    transformers.utils.logging.disable_progress_bar()  # no progress bars in a service's log
    transformers.utils.logging.set_verbosity_error()
    return torch


class HostEngine:
    """A causal LM from a HF directory (safetensors + config.json) on the CPU."""

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int | None = None,
        dtype: str = "float32",
        max_seq_len: int | None = None,
        quant: str = "none",
        quant_cache: Path | None = None,
        weights_id: str | None = None,
    ) -> None:
        """``quant``: ``none`` (weights in ``dtype``), ``int8`` or ``int4`` (weight-only, fp32
        activations; see host_quant), cached under ``quant_cache`` (default: the user cache) and keyed on
        ``weights_id`` (the manifest's checksum; default: the files' sizes and modification times)."""
        torch = import_torch()
        from transformers import DynamicCache

        if dtype not in _DTYPES:
            raise ModelLoadError(f"host engine dtype {dtype!r} is not one of {_DTYPES}")
        if quant not in HOST_QUANTS:
            raise ModelLoadError(
                f"host engine quantization {quant!r} is not one of {', '.join(HOST_QUANTS)}",
                hint="set model.host_quant to none, int8 or int4",
            )
        if quant != "none" and dtype != "float32":
            raise ModelLoadError(f"host quantization {quant} runs on float32 activations, not {dtype}")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self._cache_cls = DynamicCache
        if quant == "none":
            self._model = _load_pretrained(model_dir, getattr(torch, dtype))
        else:
            cache_root = quant_cache or paths.cache_dir() / "host-quant"
            self._model = _load_quantized(model_dir, quant, cache_root, weights_id or _files_id(model_dir))
        self._model.eval()
        config = self._model.config
        trained = int(getattr(config, "max_position_embeddings", 0) or DEFAULT_MAX_SEQ_LEN)
        self._limits = EngineLimits(
            max_seq_len=host_context(trained, max_seq_len),
            vocab_size=int(config.vocab_size),
        )
        self._info = EngineInfo(
            kind="host",
            model_path=str(model_dir),
            details={
                "dtype": dtype,
                "quant": quant,
                "threads": str(torch.get_num_threads()),
                "arch": config.model_type,
            },
        )
        self._cache: Any = self._cache_cls()
        self._n_past = 0

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
        return self._n_past

    def _forward(self, ids: Sequence[int]) -> StepOutput:
        torch = self._torch
        if not ids:
            raise ValueError("prefill needs at least one token id")
        if self._n_past + len(ids) > self._limits.max_seq_len:
            raise ContextOverflow(
                f"{self._n_past + len(ids)} positions exceed the model's context of {self._limits.max_seq_len}"
            )
        if min(ids) < 0 or max(ids) >= self._limits.vocab_size:
            raise ValueError(f"token id out of range for a vocabulary of {self._limits.vocab_size}")
        with torch.inference_mode():
            x = torch.tensor([list(ids)], dtype=torch.long)
            out = self._model(input_ids=x, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = out.past_key_values
        self._n_past += len(ids)
        logits = out.logits[0, -1].float().numpy().astype(np.float32, copy=False)
        return StepOutput(logits=logits)

    def prefill(self, ids: Sequence[int], sampling: DeviceSampling | None = None) -> StepOutput:
        return self._forward(ids)

    def decode(self, token: int, sampling: DeviceSampling | None = None) -> StepOutput:
        return self._forward((token,))

    def truncate(self, n: int) -> None:
        if n <= 0:
            self._cache = self._cache_cls()
            self._n_past = 0
        elif n < self._n_past:
            self._cache.crop(n - self._n_past)  # negative: tokens to remove (transformers 4 and 5)
            self._n_past = n

    def close(self) -> None:
        self._cache = self._cache_cls()
        self._n_past = 0


def _load_pretrained(model_dir: Path, dtype: Any) -> Any:
    """The model's own weights, as stored (transformers' loader)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, low_cpu_mem_usage=True)
    except Exception as exc:  # transformers raises many kinds for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load the model in {model_dir}: {reason}",
            hint="the model files may be incomplete or corrupt: reinstall the model",
        ) from None


def _files_id(model_dir: Path) -> str:
    """What names a model's weights without a manifest: the sizes and modification times of its files."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def _load_quantized(model_dir: Path, quant: str, cache_root: Path, weights_id: str) -> Any:
    """The model with ``quant`` weights: from the cache when it has them (no fp32 weights read), else
    quantized from the model's own weights and cached (atomically, under a lock)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    target = cache_root / cache_key(model_dir, weights_id, quant, torch.__version__)
    cached = target / QUANT_FILE
    if cached.is_file():
        try:
            config = AutoConfig.from_pretrained(str(model_dir))
            return load_quantized(config, quant, load_file(str(cached)))
        except Exception as exc:  # a damaged cache entry: quantize again below
            log.warning("the cached %s weights in %s are unusable (%s); quantizing again", quant, target, exc)
    model = quantize_model(_load_pretrained(model_dir, torch.float32), quant)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        with open(cache_root / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with staged_directory(target) as tmp:
                save_file(quantized_state(model), str(tmp / QUANT_FILE), metadata={"format": "pt"})
    except OSError as exc:  # a read-only or full cache costs the next start time, not this one
        log.warning("cannot cache the %s weights in %s: %s", quant, target, exc)
    return model
