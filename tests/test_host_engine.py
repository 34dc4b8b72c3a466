"""Host engine on the tiny Qwen2 fixture: tokens equal transformers and torch references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from appliance.engine.host import HostEngine
from appliance.errors import ContextOverflow, ModelLoadError
from appliance.generation.loop import Generator
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Finished, GenerationOptions, Message


@pytest.fixture(scope="module")
def engine(tiny_hf: Path) -> HostEngine:
    return HostEngine(tiny_hf, threads=1)


def greedy(engine: HostEngine, ids: list[int], n: int) -> list[int]:
    engine.truncate(0)
    out = engine.prefill(ids)
    tokens = []
    for _ in range(n):
        assert out.logits is not None
        t = int(out.logits.argmax())
        tokens.append(t)
        out = engine.decode(t)
    return tokens


def test_limits_and_capabilities(engine: HostEngine) -> None:
    assert engine.limits.max_seq_len == 128  # max_position_embeddings of the fixture
    assert engine.limits.vocab_size == 2048
    assert engine.capabilities.returns_logits and engine.capabilities.prefix_reuse


def test_greedy_equals_torch_reference(engine: HostEngine, reference: dict[str, Any]) -> None:
    for prompt in reference["prompts"]:
        assert greedy(engine, prompt["ids"], 8) == prompt["torch_f32"]["tokens"], prompt["name"]


@pytest.fixture(scope="module")
def hf_model(tiny_hf: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(str(tiny_hf), dtype=torch.float32)


def hf_generate(model: Any, ids: list[int], n: int, penalty: float = 1.0) -> list[int]:
    config = GenerationConfig(do_sample=False, max_new_tokens=n, repetition_penalty=penalty, pad_token_id=0)
    x = torch.tensor([ids])  # explicit mask: p5 ends in id 0, which generate would take for padding
    out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=config)
    return list(out[0, len(ids) :].tolist())


def test_greedy_equals_transformers_generate(
    engine: HostEngine, hf_model: Any, reference: dict[str, Any]
) -> None:
    for prompt in reference["prompts"]:
        assert greedy(engine, prompt["ids"], 20) == hf_generate(hf_model, prompt["ids"], 20), prompt["name"]


def test_generator_penalty_equals_transformers(
    engine: HostEngine, hf_model: Any, tiny_hf: Path, reference: dict[str, Any]
) -> None:
    """Our repetition penalty over the whole context matches transformers' (same semantics)."""
    tok = ChatTokenizer.from_dir(tiny_hf)
    gen = Generator(engine, tok, make_template("tokenizer", tok))
    messages = [Message("user", reference["prompts"][1]["text"])]
    options = GenerationOptions(
        max_new_tokens=16, temperature=0.0, repetition_penalty=1.3, repeat_last_n=128, ignore_eos=True
    )
    final = next(e for e in gen.generate(messages, options) if isinstance(e, Finished))
    prompt = gen.prompt_ids(messages, options)
    assert list(final.token_ids) == hf_generate(hf_model, prompt, 16, penalty=1.3)
    assert list(final.token_ids) != hf_generate(hf_model, prompt, 16)  # the penalty changed the answer


def test_truncate_then_continue_equals_full_prefill(engine: HostEngine, reference: dict[str, Any]) -> None:
    ids = reference["prompts"][2]["ids"]
    engine.truncate(0)
    full = engine.prefill(ids).logits
    engine.truncate(0)
    engine.prefill(ids[:25])
    engine.prefill([*ids[25:], 7, 8])  # continue past the prompt, then cut back
    engine.truncate(len(ids) - 1)
    again = engine.prefill(ids[-1:]).logits
    assert full is not None and again is not None
    assert engine.n_past == len(ids)
    assert float(abs(full - again).max()) < 1e-4


def test_context_overflow(engine: HostEngine) -> None:
    engine.truncate(0)
    with pytest.raises(ContextOverflow):
        engine.prefill([1] * 129)


def test_corrupt_weights_give_load_error(tmp_path: Path, tiny_hf: Path) -> None:
    for f in tiny_hf.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        HostEngine(tmp_path)
