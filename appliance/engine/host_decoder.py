"""A lean decoder for the Llama family (llama, qwen2, qwen3) on the CPU: the host engine's fast path.

transformers' generic forward spends most of a small model's decode step outside the matrix products:
module calls, a mask per step, and a KV cache that concatenates (copies) every layer's keys and values
each token. SmolLM2-135M (30 layers) decoded at 21.7 ms a token with int4 weights, of which the weight
kernels were 7.4 ms. This decoder runs the same arithmetic with less around it:

- q/k/v and gate/up are fused into one matrix product each (the same rows of the same weights, so
  per-row int8 scales and int4 groups come out exactly as for the separate layers);
- the KV cache is preallocated once per engine (pages are touched only as positions fill up) and
  written in place; truncating it (prefix reuse) just moves the end;
- rotary cos/sin are a table made at load; the causal mask exists only for prompts;
- no transformers import at all (config.json and safetensors are read directly), which also makes
  the load fast.

The arithmetic follows transformers' modelling code op for op in fp32 (RMSNorm, rotate-half rotary,
scaled-dot-product attention with grouped KV heads, SiLU-gated MLP), so with weights as stored it
gives transformers' tokens. Anything it does not cover (another architecture, scaled RoPE, sliding
window attention) is left to transformers: :func:`unsupported` says why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.engine.host_quant import (
    INT4_GROUP,
    DenseLinear,
    Int8Embedding,
    Linear,
    dense_linear,
    linear_from_state,
    quantized_linear,
)

__all__ = ["ARCHITECTURES", "Decoder", "DecoderConfig", "read_config", "unsupported"]

ARCHITECTURES = ("llama", "qwen2", "qwen3")


def read_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json (OSError, ValueError when missing or not JSON)."""
    data = json.loads((model_dir / "config.json").read_text())
    if not isinstance(data, dict):
        raise ValueError("config.json is not a JSON object")
    return data


def _rope(raw: dict[str, Any]) -> tuple[str, float]:
    """(rope type, theta) from a transformers 5 ``rope_parameters`` or a 4.x ``rope_theta``/``rope_scaling``."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict):
        return str(params.get("rope_type", "default")), float(params.get("rope_theta", 10000.0))
    scaling = raw.get("rope_scaling")
    kind = str((scaling or {}).get("rope_type", (scaling or {}).get("type", "default")))
    return kind, float(raw.get("rope_theta", 10000.0))


def unsupported(raw: dict[str, Any]) -> str | None:
    """Why this decoder cannot run the model of config ``raw`` (None: it can)."""
    arch = raw.get("model_type")
    if arch not in ARCHITECTURES:
        return f"architecture {arch!r} (the lean decoder runs {', '.join(ARCHITECTURES)})"
    if raw.get("hidden_act", "silu") != "silu":
        return f"activation {raw.get('hidden_act')!r}"
    kind, _ = _rope(raw)
    if kind != "default":
        return f"RoPE scaling {kind!r}"
    if raw.get("use_sliding_window"):
        return "sliding-window attention"
    return None


@dataclass(frozen=True)
class DecoderConfig:
    """The shapes and constants of a Llama-family decoder."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    eps: float
    rope_theta: float
    tied: bool
    max_positions: int

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> DecoderConfig:
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        return cls(
            layers=int(raw["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            intermediate=int(raw["intermediate_size"]),
            vocab=int(raw["vocab_size"]),
            eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=_rope(raw)[1],
            tied=bool(raw.get("tie_word_embeddings", False)),
            max_positions=int(raw.get("max_position_embeddings") or 4096),
        )


def _torch() -> Any:
    import torch

    return torch


class _Names:
    """A model's tensors by name with or without transformers' ``model.`` prefix (``lm_head`` has none)."""

    def __init__(self, tensors: Mapping[str, Any]) -> None:
        self._tensors = tensors

    def _key(self, name: str) -> str | None:
        return next((k for k in (f"model.{name}", name) if k in self._tensors), None)

    def __contains__(self, name: str) -> bool:
        return self._key(name) is not None

    def __getitem__(self, name: str) -> Any:
        key = self._key(name)
        if key is None:
            raise KeyError(name)
        return self._tensors[key]

    def get(self, name: str) -> Any:
        key = self._key(name)
        return None if key is None else self._tensors[key]


class _Layer:
    """One decoder layer's weights and its slice of the KV cache."""

    def __init__(self, qkv: Linear, o: Linear, gate_up: Linear, down: Linear, norms: dict[str, Any]) -> None:
        self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
        self.norm1 = norms["norm1"]
        self.norm2 = norms["norm2"]
        self.q_norm = norms.get("q_norm")
        self.k_norm = norms.get("k_norm")


_NORMS = {
    "norm1": "input_layernorm",
    "norm2": "post_attention_layernorm",
    "q_norm": "self_attn.q_norm",
    "k_norm": "self_attn.k_norm",
}


class Decoder:
    """A Llama-family decoder over a preallocated KV cache of ``max_seq_len`` positions."""

    def __init__(
        self,
        config: DecoderConfig,
        embed: Any,
        layers: list[_Layer],
        norm: Any,
        head: Linear,
        max_seq_len: int,
    ) -> None:
        torch = _torch()
        self.config, self.embed, self.layers, self.norm, self.head = config, embed, layers, norm, head
        c = config
        # empty, not zeros: a page of the cache is touched only when a position is written
        shape = (c.layers, 1, c.kv_heads, max_seq_len, c.head_dim)
        self._k = torch.empty(shape, dtype=torch.float32)
        self._v = torch.empty(shape, dtype=torch.float32)
        self._k_layers, self._v_layers = list(self._k), list(self._v)
        inv_freq = 1.0 / (
            c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim)
        )
        freqs = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self._cos = emb.cos()
        # rotate_half(x) * sin == roll(x, dim/2) * sin with its first half negated (exactly: only signs move)
        half, sin = c.head_dim // 2, emb.sin()
        self._sin_signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        self._scale = 1 / math.sqrt(c.head_dim)
        self._step: Callable[..., Any] | None = None
        self._step_args: tuple[list[Any], list[Any], Any, list[Any]] = ([], [], None, [])

    def use_compiled_step(self, op: Callable[..., Any] | None) -> None:
        """Decode single tokens with ``op`` (host_step.cpp's decode_step: every layer, the final norm
        and the head, in one call; None: op by op)."""
        if op is not None and not self._step_args[0]:
            empty = _torch().empty(0)
            linears = [
                t
                for layer in self.layers
                for lin in (layer.qkv, layer.o, layer.gate_up, layer.down)
                for t in lin.step_tensors()
            ]
            norms = [
                empty if n is None else n.contiguous()
                for layer in self.layers
                for n in (layer.norm1, layer.norm2, layer.q_norm, layer.k_norm)
            ]
            self._step_args = (linears, norms, self.norm.contiguous(), list(self.head.step_tensors()))
        self._step = op

    # ---- building ----

    @classmethod
    def from_weights(
        cls, config: DecoderConfig, tensors: Mapping[str, Any], mode: str, max_seq_len: int
    ) -> Decoder:
        """From the model's own tensors (transformers names, each read once: ``tensors`` may read them
        on demand), with the linear layers in ``mode`` (none, int8, int4). KeyError when one is missing."""
        torch = _torch()
        t = _Names(tensors)

        def lin(names: Sequence[str], prefix: str) -> Linear:
            weights = [t[f"{prefix}.{n}.weight"].float() for n in names]
            biases = [t.get(f"{prefix}.{n}.bias") for n in names]
            bias = None
            if any(b is not None for b in biases):
                bias = torch.cat(
                    [
                        torch.zeros(w.shape[0]) if b is None else b.float()
                        for w, b in zip(weights, biases, strict=True)
                    ]
                )
            weight = weights[0] if len(weights) == 1 else torch.cat(weights)
            del weights  # the sources of a fused weight go now, not at the end of the load
            return quantized_linear(weight, bias, mode)

        layers = []
        for i in range(config.layers):
            p = f"layers.{i}"
            norms = {k: t[f"{p}.{v}.weight"].float() for k, v in _NORMS.items() if f"{p}.{v}.weight" in t}
            layers.append(
                _Layer(
                    lin(("q_proj", "k_proj", "v_proj"), f"{p}.self_attn"),
                    lin(("o_proj",), f"{p}.self_attn"),
                    lin(("gate_proj", "up_proj"), f"{p}.mlp"),
                    lin(("down_proj",), f"{p}.mlp"),
                    norms,
                )
            )
        table = t["embed_tokens.weight"]
        head_weight = table if config.tied else t["lm_head.weight"]
        embed: Any
        head: Linear
        if mode == "none":
            embed = table.float()
            head = dense_linear(head_weight)
        else:
            embed = Int8Embedding.quantize(table)
            head = embed.head() if config.tied else quantized_linear(head_weight, None, "int8")
        return cls(config, embed, layers, t["norm.weight"].float(), head, max_seq_len)

    def state(self) -> dict[str, Any]:
        """The tensors that rebuild this decoder with :meth:`from_state` (a tied head left out)."""
        out: dict[str, Any] = {"norm": self.norm}
        if isinstance(self.embed, Int8Embedding):
            out.update(self.embed.tensors("embed"))
        else:
            out["embed.weight"] = self.embed
        if not self.config.tied:
            out.update(self.head.tensors("head"))
        for i, layer in enumerate(self.layers):
            p = f"layers.{i}"
            for name in ("qkv", "o", "gate_up", "down"):
                out.update(getattr(layer, name).tensors(f"{p}.{name}"))
            for name in _NORMS:
                if getattr(layer, name) is not None:
                    out[f"{p}.{name}"] = getattr(layer, name)
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_state(cls, config: DecoderConfig, state: dict[str, Any], max_seq_len: int) -> Decoder:
        """From :meth:`state` (KeyError or ValueError when it does not fit ``config``)."""
        c = config
        qkv_out = (c.heads + 2 * c.kv_heads) * c.head_dim
        embed: Any = (
            Int8Embedding(state["embed.weight"], state["embed.scales"])
            if "embed.scales" in state
            else state["embed.weight"]
        )
        if tuple(state["embed.weight"].shape) != (c.vocab, c.hidden):
            raise ValueError(
                f"cached embedding is {tuple(state['embed.weight'].shape)}, not {(c.vocab, c.hidden)}"
            )
        layers = []
        for i in range(c.layers):
            p = f"layers.{i}"
            layers.append(
                _Layer(
                    linear_from_state(f"{p}.qkv", state, (qkv_out, c.hidden)),
                    linear_from_state(f"{p}.o", state, (c.hidden, c.heads * c.head_dim)),
                    linear_from_state(f"{p}.gate_up", state, (2 * c.intermediate, c.hidden)),
                    linear_from_state(f"{p}.down", state, (c.hidden, c.intermediate)),
                    {k: state[f"{p}.{k}"] for k in _NORMS if f"{p}.{k}" in state},
                )
            )
        head: Linear
        if c.tied:
            head = embed.head() if isinstance(embed, Int8Embedding) else DenseLinear(embed)
        else:
            head = linear_from_state("head", state, (c.vocab, c.hidden))
        return cls(c, embed, layers, state["norm"], head, max_seq_len)

    # ---- running ----

    def forward(self, ids: Sequence[int], start: int, *, all_logits: bool = False) -> Any:
        """Run ``ids`` at positions ``start ..`` (the cache holds ``start`` positions already) and
        return the logits (fp32) of the last position, or of every position with ``all_logits``."""
        torch = _torch()
        c = self.config
        n = len(ids)
        end = start + n
        index = torch.tensor(list(ids), dtype=torch.long)
        x = self.embed[index] if isinstance(self.embed, torch.Tensor) else self.embed(index)  # [n, hidden]
        if n == 1 and self._step is not None:
            return self._step(
                x,
                *self._step_args,
                self._k,
                self._v,
                self._cos,
                self._sin_signed,
                start,
                c.heads,
                c.kv_heads,
                c.eps,
                self._scale,
                INT4_GROUP,
            )
        cos, sin = self._cos[start:end], self._sin_signed[start:end]
        rms_norm, silu = torch.nn.functional.rms_norm, torch.nn.functional.silu
        hidden, head_dim, half = (c.hidden,), (c.head_dim,), c.head_dim // 2
        mask = None if n == 1 else torch.ones(n, end, dtype=torch.bool).tril(diagonal=start)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        qk_heads = c.heads + c.kv_heads
        qk_width = qk_heads * c.head_dim
        for layer, k_cache, v_cache in zip(self.layers, self._k_layers, self._v_layers, strict=True):
            h = rms_norm(x, hidden, layer.norm1, c.eps)
            qkv = layer.qkv(h)
            qk = qkv[:, :qk_width].view(n, qk_heads, c.head_dim)
            if layer.q_norm is not None:
                qk = torch.cat(
                    (
                        rms_norm(qk[:, : c.heads], head_dim, layer.q_norm, c.eps),
                        rms_norm(qk[:, c.heads :], head_dim, layer.k_norm, c.eps),
                    ),
                    dim=1,
                )
            # rotary on q and k heads at once: [heads + kv_heads, n, dim]
            qk = qk.transpose(0, 1)
            qk = qk * cos + qk.roll(half, -1) * sin
            k_cache[:, :, start:end] = qk[c.heads :]
            v_cache[:, :, start:end] = qkv[:, qk_width:].view(n, c.kv_heads, c.head_dim).transpose(0, 1)
            attn = sdpa(
                qk[None, : c.heads],
                k_cache[:, :, :end],
                v_cache[:, :, :end],
                attn_mask=mask,
                scale=self._scale,
                enable_gqa=c.kv_heads != c.heads,
            )
            x = x + layer.o(attn[0].transpose(0, 1).reshape(n, c.heads * c.head_dim))
            h = rms_norm(x, hidden, layer.norm2, c.eps)
            gate, up = layer.gate_up(h).split(c.intermediate, dim=-1)
            x = x + layer.down(silu(gate) * up)
        x = x if all_logits else x[-1:]
        return self.head(rms_norm(x, hidden, self.norm, c.eps))
