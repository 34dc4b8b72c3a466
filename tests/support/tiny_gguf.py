"""A GGUF written from a tiny Hugging Face directory, the way llama.cpp's converter lays one out
(numpy + the ``gguf`` package; nothing downloaded), for the compiler's GGUF input.

Tensor names and metadata keys are llama.cpp's (``token_embd``, ``blk.N.attn_q``, ``<arch>.block_count``
...); Llama's q/k rows are permuted into llama.cpp's interleaved rope order, which readers undo; the
tokenizer is the directory's byte-level BPE as ``tokenizer.ggml.*`` (model ``gpt2``), as SmolLM2's GGUF
carries it. Matrices can be stored quantized (Q8_0): :func:`as_stored` gives back the values a reader
dequantizes, in the Hugging Face layout, so that a directory of the same weights can be written.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

from appliance.compile.source import Checkpoint

__all__ = ["as_stored", "write_gguf"]

_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _gguf_name(hf: str) -> str:
    stem, _, kind = hf.rpartition(".")
    if stem in _TOP:
        return f"{_TOP[stem]}.{kind}"
    _, _, idx, rest = stem.split(".", 3)
    return f"blk.{idx}.{_LAYER[rest]}.{kind}"


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (half-split rope -> interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _read(src: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    config = json.loads((src / "config.json").read_text())
    ckpt = Checkpoint(src)  # bf16 too, which numpy cannot hold
    return config, {name: ckpt.read(name) for name in ckpt.names()}


def _quantize(name: str, w: np.ndarray, quant: gguf.GGMLQuantizationType | None) -> np.ndarray:
    """Norms and biases stay f32 (as llama.cpp keeps them); matrices take ``quant``."""
    if quant is None or w.ndim != 2 or w.shape[1] % 32:
        return w
    return gguf.quants.quantize(w, quant)


def as_stored(src: Path, dest: Path, quant: gguf.GGMLQuantizationType | None) -> Path:
    """A Hugging Face directory holding ``src``'s weights as a reader of its GGUF gets them (f32)."""
    config, tensors = _read(src)
    out = {}
    for name, w in tensors.items():
        q = _quantize(name, w, quant)
        out[name] = w if q is w else gguf.quants.dequantize(q, quant).astype(np.float32)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dest / "model.safetensors"))
    (dest / "config.json").write_text(json.dumps(config | {"dtype": "float32"}, indent=2))
    return dest


def _add_tokenizer(w: gguf.GGUFWriter, src: Path, config: dict[str, object]) -> None:
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab: dict[str, int] = tok["model"]["vocab"]
    added = {a["id"]: a["content"] for a in tok["added_tokens"]}
    size = int(config["vocab_size"])  # type: ignore[call-overload]
    by_id = {i: t for t, i in vocab.items()} | added
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [
        gguf.TokenType.CONTROL
        if i in added
        else gguf.TokenType.NORMAL
        if i in by_id
        else gguf.TokenType.UNUSED
        for i in range(size)
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, setter in (("eos_token_id", w.add_eos_token_id), ("bos_token_id", w.add_bos_token_id)):
        if isinstance(config.get(key), int):
            setter(int(config[key]))  # type: ignore[call-overload]
    w.add_add_bos_token(False)


def write_gguf(src: Path, dest: Path, quant: gguf.GGMLQuantizationType | None = None) -> Path:
    """``src`` (config.json, safetensors, tokenizer.json) as one GGUF file at ``dest``."""
    config, tensors = _read(src)
    arch = str(config["model_type"])
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])  # type: ignore[call-overload]
    w = gguf.GGUFWriter(str(dest), arch)
    w.add_name(src.name)
    w.add_context_length(int(config["max_position_embeddings"]))  # type: ignore[call-overload]
    w.add_embedding_length(int(config["hidden_size"]))  # type: ignore[call-overload]
    w.add_block_count(int(config["num_hidden_layers"]))  # type: ignore[call-overload]
    w.add_feed_forward_length(int(config["intermediate_size"]))  # type: ignore[call-overload]
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(int(config.get("head_dim") or int(config["hidden_size"]) // heads))  # type: ignore[call-overload]
    rope = config.get("rope_parameters") or {}
    w.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))  # type: ignore[union-attr]
    w.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))  # type: ignore[arg-type]
    w.add_vocab_size(int(config["vocab_size"]))  # type: ignore[call-overload]
    _add_tokenizer(w, src, config)
    for name, t in tensors.items():
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            t = _permute(t, heads if "q_proj" in name else kv)
        q = _quantize(name, t, quant)
        if q is t:
            w.add_tensor(_gguf_name(name), np.ascontiguousarray(t, dtype=np.float32))
        else:
            w.add_tensor(_gguf_name(name), q, raw_dtype=quant)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dest
