"""The lean decoder (host_decoder) against transformers' own modelling code, on small random models of
each architecture it runs (llama with and without tied head, qwen2 with q/k/v biases, qwen3 with q/k
norms), and the host engine's choice between it and transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from appliance.engine import host_quant
from appliance.engine.host import HostEngine
from appliance.errors import ModelLoadError

ARCHS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "tie_word_embeddings": True, "rope_theta": 100000.0},
    "llama-untied-bias": {
        "model_type": "llama",
        "tie_word_embeddings": False,
        "attention_bias": True,
        "mlp_bias": True,
    },
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": False},
    "qwen3": {"model_type": "qwen3", "tie_word_embeddings": True, "head_dim": 32},
}


def tiny_model(root: Path, name: str, **extra: Any) -> Path:
    """A random model of ``name``'s architecture: 2 layers, GQA (4 heads, 2 KV heads), vocabulary 512."""
    fields = {**ARCHS[name], **extra}
    config = AutoConfig.for_model(
        fields.pop("model_type"),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=256,
        **fields,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random biases and norms too, so that a missing one shows
        for pname, p in model.named_parameters():
            if pname.endswith(("bias", "norm.weight", "layernorm.weight")):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in pname else 0.0))
    out = root / name
    model.save_pretrained(str(out))
    return out


def hf_logits(model_dir: Path, ids: list[int]) -> Any:
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0]


IDS = [5, 17, 300, 42, 7, 99, 511, 3, 250, 128, 64, 1]


@pytest.mark.parametrize("name", list(ARCHS))
def test_lean_decoder_equals_transformers(name: str, tmp_path: Path) -> None:
    model_dir = tiny_model(tmp_path, name)
    engine = HostEngine(model_dir, threads=1)
    assert engine.info.details["runner"] == "lean decoder"
    ref = hf_logits(model_dir, IDS)
    every = engine.all_logits(IDS)
    assert float((every - ref).abs().max()) < 1e-4 * float(ref.abs().max())
    # the KV cache path: a prompt, then one token at a time, then a rewind (prefix reuse)
    engine.prefill(IDS[:5])
    for i in range(5, len(IDS)):
        step = engine.decode(IDS[i]).logits
        assert step is not None
        assert abs(step - ref[i].numpy()).max() < 1e-4 * float(ref.abs().max()), i
    engine.truncate(3)
    again = engine.prefill(IDS[3:8]).logits
    assert again is not None and abs(again - ref[7].numpy()).max() < 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_lean_decoder_stays_close_to_fp32(quant: str, tmp_path: Path) -> None:
    model_dir = tiny_model(tmp_path, "qwen3")
    ref = hf_logits(model_dir, IDS)
    engine = HostEngine(model_dir, threads=1, quant=quant, quant_cache=tmp_path / "cache")
    got = engine.all_logits(IDS)
    rel = float((got - ref).norm() / ref.norm())
    assert rel < (0.05 if quant == "int8" else 0.2), rel
    assert list((tmp_path / "cache").glob(f"{quant}-*/model.safetensors"))


def test_what_the_lean_decoder_does_not_cover_runs_on_transformers(tmp_path: Path) -> None:
    model_dir = tiny_model(tmp_path, "llama", rope_scaling={"rope_type": "linear", "factor": 2.0})
    engine = HostEngine(model_dir, threads=1)
    assert engine.info.details["runner"] == "transformers (RoPE scaling 'linear')"
    ref = hf_logits(model_dir, IDS)
    out = engine.prefill(IDS).logits
    assert out is not None and abs(out - ref[-1].numpy()).max() < 1e-4 * float(ref.abs().max())
    with pytest.raises(ModelLoadError, match=r"host quantization int4 needs the lean decoder.*linear"):
        HostEngine(model_dir, quant="int4")
    assert HostEngine(model_dir, quant="auto", source_quant="Q4_1").info.details["quant"] == "none"


def test_auto_quantization_follows_the_source_weights(tmp_path: Path) -> None:
    model_dir = tiny_model(tmp_path, "llama")
    cache = tmp_path / "cache"
    q4 = HostEngine(model_dir, quant="auto", source_quant="Q4_1 (dequantized to f32)", quant_cache=cache)
    assert q4.info.details["quant"] == "int4"
    for source in (None, "unknown", "bf16", "Q8_0"):
        assert HostEngine(model_dir, quant="auto", source_quant=source).info.details["quant"] == "none"


def test_the_lean_decoder_loads_without_transformers(tmp_path: Path) -> None:
    """Importing transformers costs most of a second: a lean load must not."""
    model_dir = tiny_model(tmp_path, "qwen2")
    code = (
        "import sys; from appliance.engine.host import HostEngine; "
        f"e = HostEngine(__import__('pathlib').Path({str(model_dir)!r}), threads=1); e.prefill([1, 2, 3]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('transformers'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == []


def test_weights_that_do_not_fit_the_config_give_a_load_error(tmp_path: Path) -> None:
    model_dir = tiny_model(tmp_path, "qwen2")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ModelLoadError, match=r"do not fit its config\.json"):
        HostEngine(model_dir)
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"cannot read the model's config\.json"):
        HostEngine(model_dir)


@pytest.mark.parametrize(("n", "k"), [(128, 64), (960, 576), (48, 96)])
def test_int4_dequantization_reads_torchs_packing(n: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense copy a quantized layer uses for prompts: the blocked read (rows in blocks of 64) gives
    what the per-shape learned layout gives, and both are the weight within half a quantization step."""
    torch.manual_seed(n)
    weight = torch.randn(n, k)
    layer = host_quant.quantized_linear(weight, None, "int4")
    assert isinstance(layer, host_quant.Int4Linear)
    fast = layer.dequantized()
    monkeypatch.setattr(host_quant, "_BLOCKED", [False])
    learned = layer.dequantized()
    assert torch.equal(fast, learned)
    step = weight.reshape(n, -1, host_quant.INT4_GROUP).aminmax(dim=-1)
    scale = ((step.max - step.min) / 15).repeat_interleave(host_quant.INT4_GROUP, dim=1)
    assert bool(((fast - weight).abs() <= scale * 0.51 + 1e-2 * scale.max()).all())


def test_quantized_weights_from_the_cache_sit_where_the_kernels_can_read_them(tmp_path: Path) -> None:
    """safetensors puts a tensor wherever its file header says; torch's int8 kernel crashed (SIGSEGV) on
    this model's cached weights, 8 bytes off a 64-byte boundary."""
    model_dir = tiny_model(tmp_path, "llama")
    fresh = HostEngine(model_dir, threads=1, quant="int8", quant_cache=tmp_path / "q", compiled_step=False)
    cached = HostEngine(model_dir, threads=1, quant="int8", quant_cache=tmp_path / "q", compiled_step=False)
    decoder = cached._decoder
    assert decoder is not None
    for tensor in decoder.state().values():
        assert tensor.data_ptr() % 64 == 0
    want, got = fresh.prefill(IDS[:4]).logits, cached.prefill(IDS[:4]).logits
    assert want is not None and got is not None and (want == got).all()
