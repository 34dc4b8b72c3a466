"""A random tiny Llama (tied embeddings, no biases) written with numpy + safetensors, for compiler tests.

Weights are drawn from N(0, 0.08) (norms 1 + N(0, 0.08)) and rounded to bf16 values, stored as f32 so
that torch and the bmodel start from the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_hidden_layers": 2,
    "vocab_size": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dtype": "float32",
}


def _bf16(x: np.ndarray) -> np.ndarray:
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even
    return rounded.view(np.float32)


def write_tiny_llama(dest: Path, seed: int = 20261202, **changes: object) -> Path:
    """The tiny Llama in ``dest``; ``changes`` override CONFIG entries (e.g. ``vocab_size``)."""
    rng = np.random.default_rng(seed)
    c: dict[str, Any] = CONFIG | changes
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]

    def mat(*shape: int) -> np.ndarray:
        return _bf16(rng.normal(0.0, 0.08, shape))

    def norm() -> np.ndarray:
        return _bf16(1.0 + rng.normal(0.0, 0.08, (h,)))

    tensors = {"model.embed_tokens.weight": mat(v, h), "model.norm.weight": norm()}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": mat(q, h),
            p + "self_attn.k_proj.weight": mat(kv, h),
            p + "self_attn.v_proj.weight": mat(kv, h),
            p + "self_attn.o_proj.weight": mat(h, q),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": mat(inter, h),
            p + "mlp.up_proj.weight": mat(inter, h),
            p + "mlp.down_proj.weight": mat(h, inter),
        }
        if c["model_type"] == "qwen3":  # per-head q/k norms
            for name in ("q_norm", "k_norm"):
                tensors[p + f"self_attn.{name}.weight"] = _bf16(1.0 + rng.normal(0.0, 0.08, (c["head_dim"],)))
    dest.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(t, dtype=np.float32) for k, t in tensors.items()},
        str(dest / "model.safetensors"),
    )
    (dest / "config.json").write_text(json.dumps(c, indent=2))
    return dest


# The same shape as a Qwen3 (q_norm/k_norm per head before the rotary; tied, as Qwen3-0.6B is).
QWEN3 = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}

# Llama 3.1-style scaling sized for the tiny model (head_dim 16, theta 1e4: wavelengths 6 to 20,000):
# wavelengths above 32 are divided by 4, below 8 kept, between them blended.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
