"""RoPE scaling (linear, llama3): the cos/sin tables the compiler writes into block_i's npz equal
transformers' own rotary embedding for the same config.json, old (`rope_scaling`) and new
(`rope_parameters`) spellings. The tokens on the cmodel are in test_compile_cmodel.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from support.tiny_llama import CONFIG, LLAMA3_ROPE

from appliance.compile.nets import rotary_tables
from appliance.compile.rope import RopeScaling
from appliance.compile.source import ModelSpec, read_spec
from appliance.errors import ModelFormatError

SEQ = 64


def _transformers_tables(config: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    emb = LlamaRotaryEmbedding(cfg)
    x = torch.zeros(1, SEQ, 1, dtype=torch.float32)
    cos, sin = emb(x, torch.arange(SEQ)[None])
    return cos[0].numpy(), sin[0].numpy()


def _spec(tmp_path: Path, config: dict[str, object]) -> ModelSpec:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return read_spec(tmp_path)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("default", {}),
        ("llama3 (rope_scaling)", {"rope_scaling": LLAMA3_ROPE}),
        (
            "llama3 (rope_parameters)",
            {"rope_parameters": LLAMA3_ROPE | {"rope_theta": 500000.0}, "rope_theta": None},
        ),
        ("linear (type)", {"rope_scaling": {"type": "linear", "factor": 2.5}}),
    ],
)
def test_rotary_tables_equal_transformers(tmp_path: Path, name: str, change: dict[str, object]) -> None:
    config = {k: v for k, v in (CONFIG | change).items() if v is not None}
    spec = _spec(tmp_path, config)
    cos, sin = rotary_tables(spec, SEQ)
    want_cos, want_sin = _transformers_tables(config)
    np.testing.assert_allclose(cos[:, 0], want_cos, rtol=0, atol=2e-6)
    np.testing.assert_allclose(sin[:, 0], want_sin, rtol=0, atol=2e-6)
    if name != "default":  # the scaling changed the tables (so the check above could fail)
        plain = rotary_tables(_spec(tmp_path, CONFIG), SEQ)[0]
        assert np.abs(plain - cos).max() > 0.1


def test_llama3_scaling_is_read_from_either_spelling(tmp_path: Path) -> None:
    spec = _spec(tmp_path, CONFIG | {"rope_scaling": LLAMA3_ROPE, "rope_theta": 500000.0})
    assert spec.rope_theta == 500000.0
    assert spec.rope_scaling == RopeScaling("llama3", 4.0, 1.0, 4.0, 32)


def test_llama3_scaling_without_its_fields_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ModelFormatError, match=re.escape("rope_scaling.low_freq_factor must be a positive number")
    ):
        _spec(tmp_path, CONFIG | {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
