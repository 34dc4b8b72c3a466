"""The host engine: torch on the CPU, for machines without a TPU.

Llama-family models (llama, qwen2, qwen3: the embedded SmolLM2 among them) run on the lean decoder
(host_decoder: fused layers, a preallocated KV cache, no transformers import), in fp32 or with int8 /
int4 weights (host_quant). Anything else runs on transformers: a hand-written KV-cache loop (one
forward per token on a DynamicCache, logits of the last position only) instead of ``generate`` +
``TextIteratorStreamer``. Either way the cache survives between requests so the loop can reuse a
conversation's prefix.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance import paths
from appliance.atomic import staged_directory
from appliance.engine import host_decoder, host_kernels
from appliance.engine.host_quant import cache_key
from appliance.engine.options import HOST_QUANTS
from appliance.engine.protocol import (
    Capabilities,
    DeviceSampling,
    EngineInfo,
    EngineLimits,
    StepOutput,
)
from appliance.errors import ContextOverflow, EngineUnavailable, ModelLoadError

__all__ = ["DEFAULT_MAX_SEQ_LEN", "HostEngine", "host_context", "import_torch", "import_transformers"]

DEFAULT_MAX_SEQ_LEN = 4096
_REINSTALL = "the model files may be incomplete or corrupt: reinstall the model"
QUANT_FILE = "model.safetensors"

log = logging.getLogger(__name__)


def host_context(trained: int, cap: int | None = None) -> int:
    """The positions the host engine's KV cache holds for a model trained for ``trained``: at most
    ``cap`` (default DEFAULT_MAX_SEQ_LEN), since a CPU KV cache of the full trained length is slow."""
    return min(trained or DEFAULT_MAX_SEQ_LEN, cap or DEFAULT_MAX_SEQ_LEN)


_DTYPES = ("float32", "bfloat16", "float16")


def import_torch() -> Any:
    """torch, imported on first use (the host extra)."""
    try:
        import torch
    except ImportError:
        raise EngineUnavailable(
            "the host engine needs torch, which is not installed",
            hint="pip install 'llm-tpu-appliance[host]' (or run on a box with a TPU)",
        ) from None
    return torch


def import_transformers() -> Any:
    """transformers (the host extra), with its progress bars and warnings silenced for a service's log."""
    import_torch()
    try:
        import transformers
    except ImportError:
        raise EngineUnavailable(
            "this model needs transformers, which is not installed",
            hint="pip install 'llm-tpu-appliance[host]'",
        ) from None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


class HostEngine:
    """A causal LM from a HF directory (safetensors + config.json) on the CPU: the lean decoder
    (host_decoder) for the Llama family, transformers for anything else."""

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
        source_quant: str | None = None,
        compiled_step: bool = True,
    ) -> None:
        """``quant``: ``none`` (weights in ``dtype``), ``int8`` or ``int4`` (weight-only, fp32
        activations; see host_quant), cached under ``quant_cache`` (default: the user cache) and keyed on
        ``weights_id`` (the manifest's checksum; default: the files' sizes and modification times);
        ``auto``: int4 when the weights came from a 4-bit GGUF (``source_quant``, the manifest's
        quantization, e.g. "Q4_1 ..."), which int4 reproduces, else none. ``compiled_step``: decode
        single tokens of the lean decoder with the compiled step (host_kernels; built in the background
        on first use) once it is there; False: always op by op."""
        torch = import_torch()
        if dtype not in _DTYPES:
            raise ModelLoadError(f"host engine dtype {dtype!r} is not one of {_DTYPES}")
        if quant not in HOST_QUANTS:
            raise ModelLoadError(
                f"host engine quantization {quant!r} is not one of {', '.join(HOST_QUANTS)}",
                hint="set model.host_quant to auto, none, int8 or int4",
            )
        raw = _read_config(model_dir)
        why_not = host_decoder.unsupported(raw) if dtype == "float32" else f"dtype {dtype}"
        if quant == "auto":
            quant = "int4" if why_not is None and (source_quant or "").upper().startswith("Q4") else "none"
        if quant != "none" and dtype != "float32":
            raise ModelLoadError(f"host quantization {quant} runs on float32 activations, not {dtype}")
        if quant != "none" and why_not is not None:
            raise ModelLoadError(
                f"host quantization {quant} needs the lean decoder, which does not run {model_dir.name}: {why_not}",
                hint="set model.host_quant: none for this model",
            )
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        trained = int(raw.get("max_position_embeddings") or DEFAULT_MAX_SEQ_LEN)
        context = host_context(trained, max_seq_len)
        self._decoder: host_decoder.Decoder | None = None
        self._step: host_kernels.CompiledStep | None = None  # until its build ends
        decode_step = "op by op (transformers)"
        self._model: Any = None
        if why_not is None:
            config = host_decoder.DecoderConfig.from_raw(raw)
            if quant == "none":
                self._decoder = _from_weights(model_dir, config, "none", context)  # as stored, in fp32
            else:
                cache_root = quant_cache or paths.cache_dir() / "host-quant"
                key = weights_id or _files_id(model_dir)
                self._decoder = _load_quantized(model_dir, config, quant, cache_root, key, context)
            vocab, arch = config.vocab, str(raw.get("model_type"))
            if compiled_step:
                self._step = host_kernels.compiled_step(paths.cache_dir() / "host-kernels")
            decode_step = self._step.status if self._step is not None else "op by op (compiled_step=False)"
        else:
            import_transformers()
            from transformers import DynamicCache

            self._cache_cls = DynamicCache
            self._model = _load_pretrained(model_dir, getattr(torch, dtype))
            self._model.eval()
            self._cache: Any = self._cache_cls()
            vocab, arch = int(self._model.config.vocab_size), str(self._model.config.model_type)
        self._limits = EngineLimits(max_seq_len=context, vocab_size=vocab)
        self._info = EngineInfo(
            kind="host",
            model_path=str(model_dir),
            details={
                "dtype": dtype,
                "quant": quant,
                "threads": str(torch.get_num_threads()),
                "arch": arch,
                "runner": "lean decoder" if self._decoder is not None else f"transformers ({why_not})",
                "decode_step": decode_step,  # compiled, building, or why tokens run op by op
            },
        )
        self._n_past = 0
        self._attach_step()  # a step already built (cached) is loaded by now

    def _attach_step(self) -> None:
        """Switch the decoder to the compiled step once its build has ended (between two tokens)."""
        step = self._step
        if step is None or self._decoder is None or step.status == "building":
            return
        self._decoder.use_compiled_step(step.get())  # None when the step is unavailable: op by op
        self._step = None
        self._info.details["decode_step"] = step.status
        log.info("host engine: the decode step is %s", step.status)

    def wait_for_compiled_step(self, timeout: float | None = None) -> str:
        """Wait for the compiled decode step's build (benchmarks, tests) and say how decoding runs:
        compiled, op by op, transformers, or why the compiled step is unavailable."""
        if self._step is not None:
            self._step.wait(timeout)
            self._attach_step()
        return str(self._info.details["decode_step"])

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
        self._attach_step()
        with torch.inference_mode():
            if self._decoder is not None:
                logits = self._decoder.forward(ids, self._n_past)[-1]
            else:
                x = torch.tensor([list(ids)], dtype=torch.long)
                out = self._model(input_ids=x, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
                self._cache = out.past_key_values
                logits = out.logits[0, -1]
        self._n_past += len(ids)
        return StepOutput(logits=logits.float().numpy().astype(np.float32, copy=False))

    def all_logits(self, ids: Sequence[int]) -> Any:
        """For evaluation: the logits (a float32 torch tensor [len(ids), vocab]) at every position of
        ``ids`` run from an empty cache; the cache is reset before and after."""
        self.truncate(0)
        with self._torch.inference_mode():
            if self._decoder is not None:
                out = self._decoder.forward(ids, 0, all_logits=True)
            else:
                out = self._model(input_ids=self._torch.tensor([list(ids)])).logits[0]
        self.truncate(0)
        return out.float()

    def prefill(self, ids: Sequence[int], sampling: DeviceSampling | None = None) -> StepOutput:
        return self._forward(ids)

    def decode(self, token: int, sampling: DeviceSampling | None = None) -> StepOutput:
        return self._forward((token,))

    def truncate(self, n: int) -> None:
        if n <= 0:
            if self._decoder is None:
                self._cache = self._cache_cls()
            self._n_past = 0
        elif n < self._n_past:
            if self._decoder is None:
                self._cache.crop(n - self._n_past)  # negative: tokens to remove (transformers 4 and 5)
            self._n_past = n

    def close(self) -> None:
        self.truncate(0)


def _load_pretrained(model_dir: Path, dtype: Any) -> Any:
    """The model's own weights, as stored (transformers' loader)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, low_cpu_mem_usage=True)
    except Exception as exc:  # transformers raises many kinds for bad files
        raise _unreadable(model_dir, exc) from None


def _files_id(model_dir: Path) -> str:
    """What names a model's weights without a manifest: the sizes and modification times of its files."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        return host_decoder.read_config(model_dir)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the model's config.json in {model_dir}: {exc}", hint=_REINSTALL
        ) from None


class _Weights(Mapping[str, Any]):
    """The tensors of a model's safetensors files (one file or shards), read one at a time when asked
    for: building the decoder holds each source tensor only while it makes its own copy."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors import safe_open

        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(
                f"cannot load the model in {model_dir}: no .safetensors weights", hint=_REINSTALL
            )
        self._where: dict[str, Any] = {}
        for f in files:
            try:
                handle = safe_open(str(f), framework="pt")
            except Exception as exc:  # safetensors raises its own kinds for bad files
                raise _unreadable(model_dir, exc, where=f"{f.name}: ") from None
            self._where.update(dict.fromkeys(handle.keys(), handle))

    def __getitem__(self, name: str) -> Any:
        return self._where[name].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _unreadable(model_dir: Path, exc: BaseException, where: str = "") -> ModelLoadError:
    """The error for model files a loader (safetensors, torch, transformers) could not read: the first
    line of what it said, or the kind of error when it said nothing."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return ModelLoadError(f"cannot load the model in {model_dir}: {where}{reason}", hint=_REINSTALL)


def _from_weights(
    model_dir: Path, config: host_decoder.DecoderConfig, mode: str, context: int
) -> host_decoder.Decoder:
    weights = _Weights(model_dir)
    try:
        return host_decoder.Decoder.from_weights(config, weights, mode, context)
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the model in {model_dir}: its weights do not fit its config.json ({exc})",
            hint=_REINSTALL,
        ) from None
    except Exception as exc:  # a tensor that cannot be read, or shapes torch cannot combine
        raise _unreadable(model_dir, exc) from None


ALIGNMENT = 64  # bytes: torch's CPU allocator's, which its quantized kernels' vector loads assume


def _aligned(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every tensor at an ALIGNMENT-byte address. safetensors places tensors wherever the
    file's header puts them: the int8 kernel crashes (SIGSEGV) on a weight 8 bytes off."""
    return {k: t if t.data_ptr() % ALIGNMENT == 0 else t.clone() for k, t in state.items()}


def _load_quantized(
    model_dir: Path,
    config: host_decoder.DecoderConfig,
    quant: str,
    cache_root: Path,
    weights_id: str,
    context: int,
) -> host_decoder.Decoder:
    """The decoder with ``quant`` weights: from the cache when it has them (no fp32 weights read), else
    quantized from the model's own weights and cached (atomically, under a lock)."""
    import torch
    from safetensors.torch import load_file, save_file

    target = cache_root / cache_key(model_dir, weights_id, quant, torch.__version__)
    cached = target / QUANT_FILE
    if cached.is_file():
        try:
            return host_decoder.Decoder.from_state(config, _aligned(load_file(str(cached))), context)
        except Exception as exc:  # a damaged cache entry: quantize again below
            log.warning("the cached %s weights in %s are unusable (%s); quantizing again", quant, target, exc)
    decoder = _from_weights(model_dir, config, quant, context)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        with open(cache_root / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with staged_directory(target) as tmp:
                save_file(decoder.state(), str(tmp / QUANT_FILE), metadata={"format": "pt"})
    except OSError as exc:  # a read-only or full cache costs the next start time, not this one
        log.warning("cannot cache the %s weights in %s: %s", quant, target, exc)
    return decoder
