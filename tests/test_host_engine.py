"""Host engine on the tiny Qwen2 fixture: tokens equal transformers and torch references, in each weight
mode (model.host_quant: none, int8, int4) where the mode promises it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from appliance import paths
from appliance.config.schema import ModelSection
from appliance.engine import host_quant
from appliance.engine.host import HostEngine
from appliance.errors import ContextOverflow, ModelLoadError
from appliance.generation.loop import Generator
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Finished, GenerationOptions, Message
from appliance.models.directory import build_manifest
from appliance.models.loader import load_model
from appliance.models.manifest import write_manifest


@pytest.fixture(scope="module", params=["none", "int8", "int4"])
def engine(
    request: pytest.FixtureRequest, tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory
) -> HostEngine:
    return HostEngine(tiny_hf, threads=1, quant=request.param, quant_cache=tmp_path_factory.mktemp("quant"))


@pytest.fixture(scope="module", params=["none", "int8"])
def exact_engine(
    request: pytest.FixtureRequest, tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory
) -> HostEngine:
    """The modes that promise fp32's greedy tokens on the fixture prompts (the reference's 8 tokens;
    int8 parts from fp32 at the 20th token of one prompt of this random-weight model, int4 earlier:
    their agreement on the real embedded model is checked in test_host_quant)."""
    return HostEngine(tiny_hf, threads=1, quant=request.param, quant_cache=tmp_path_factory.mktemp("quant"))


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


def test_greedy_equals_torch_reference(exact_engine: HostEngine, reference: dict[str, Any]) -> None:
    for prompt in reference["prompts"]:
        assert greedy(exact_engine, prompt["ids"], 8) == prompt["torch_f32"]["tokens"], prompt["name"]


@pytest.fixture(scope="module")
def hf_model(tiny_hf: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(str(tiny_hf), dtype=torch.float32)


def hf_generate(model: Any, ids: list[int], n: int, penalty: float = 1.0) -> list[int]:
    config = GenerationConfig(do_sample=False, max_new_tokens=n, repetition_penalty=penalty, pad_token_id=0)
    x = torch.tensor([ids])  # explicit mask: p5 ends in id 0, which generate would take for padding
    out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=config)
    return list(out[0, len(ids) :].tolist())


@pytest.fixture(scope="module")
def fp32_engine(tiny_hf: Path) -> HostEngine:
    """The loop's semantics against transformers' own generate, on the same (fp32) weights."""
    return HostEngine(tiny_hf, threads=1, quant="none")


def test_greedy_equals_transformers_generate(
    fp32_engine: HostEngine, hf_model: Any, reference: dict[str, Any]
) -> None:
    for prompt in reference["prompts"]:
        assert greedy(fp32_engine, prompt["ids"], 20) == hf_generate(hf_model, prompt["ids"], 20), prompt[
            "name"
        ]


def test_generator_penalty_equals_transformers(
    fp32_engine: HostEngine, hf_model: Any, tiny_hf: Path, reference: dict[str, Any]
) -> None:
    """Our repetition penalty over the whole context matches transformers' (same semantics)."""
    tok = ChatTokenizer.from_dir(tiny_hf)
    gen = Generator(fp32_engine, tok, make_template("tokenizer", tok))
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


def test_quantized_weights_load_from_the_cache_without_the_model_weights(
    tmp_path: Path, tiny_hf: Path, reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start quantizes and caches (keyed on the manifest's checksum, which the loader passes
    as weights_id); the next loads the cached int8/int4 weights alone: with the fp32 weights gone it
    still answers the same tokens."""
    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    manifest = build_manifest(model, "tiny", source="test", fields={"engine": "host"})
    write_manifest(model, manifest)
    cache = tmp_path / "cache"
    ids = reference["prompts"][1]["ids"]

    def engine(quant: str) -> HostEngine:
        return HostEngine(model, threads=1, quant=quant, quant_cache=cache, weights_id=manifest.checksum)

    for quant in ("int8", "int4"):
        first = greedy(engine(quant), ids, 8)
        assert len(list(cache.glob(f"{quant}-*/model.safetensors"))) == 1
        saved = (model / "model.safetensors").rename(tmp_path / "fp32.safetensors")
        assert greedy(engine(quant), ids, 8) == first
        saved.rename(model / "model.safetensors")
    assert greedy(engine("int8"), ids, 8) == reference["prompts"][1]["torch_f32"]["tokens"]
    # the loader keys the cache on the manifest's checksum (the user cache: LLM_TPU_CACHE_DIR), which
    # gets the run's compiled decode step (or the engine would build its own in the background)
    shutil.copytree(paths.cache_dir() / "host-kernels", tmp_path / "user-cache/host-kernels")
    monkeypatch.setenv("LLM_TPU_CACHE_DIR", str(tmp_path / "user-cache"))
    load_model(ModelSection(ref=str(model), engine="host", host_quant="int8")).close()
    key = host_quant.cache_key(model, manifest.checksum, "int8", torch.__version__)
    assert (tmp_path / "user-cache/host-quant" / key / "model.safetensors").is_file()


def test_a_damaged_cache_entry_is_quantized_again(
    tmp_path: Path, tiny_hf: Path, reference: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    HostEngine(tiny_hf, threads=1, quant="int8", quant_cache=cache)
    (entry,) = cache.glob("int8-*/model.safetensors")
    entry.write_bytes(b"\x00garbage" * 10)
    prompt = reference["prompts"][0]
    again = HostEngine(tiny_hf, threads=1, quant="int8", quant_cache=cache)
    assert greedy(again, prompt["ids"], 8) == prompt["torch_f32"]["tokens"]
    assert "unusable" in caplog.text and "quantizing again" in caplog.text
    assert entry.stat().st_size > 1000  # rewritten


def test_bad_quantization_gives_load_error(tiny_hf: Path) -> None:
    with pytest.raises(ModelLoadError, match="quantization 'int3' is not one of auto, none, int8, int4"):
        HostEngine(tiny_hf, quant="int3")
    with pytest.raises(ModelLoadError, match="float32 activations"):
        HostEngine(tiny_hf, quant="int8", dtype="bfloat16")


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_long_prompts_take_the_gemm_path_with_the_kernels_rounding(
    quant: str, tiny_hf: Path, tmp_path: Path, reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From DENSE_ROWS prompt tokens a quantized layer multiplies by its dequantized weight with the fp32
    GEMM (torch's kernels do one GEMV per row); it rounds like the kernel, so a prompt prefilled whole or
    in pieces (prefix reuse) gives the same logits."""
    engine = HostEngine(tiny_hf, threads=1, quant=quant, quant_cache=tmp_path)
    ids = reference["prompts"][2]["ids"]
    engine.truncate(0)
    kernel = engine.prefill(ids).logits
    monkeypatch.setattr(host_quant, "DENSE_ROWS", 8)
    engine.truncate(0)
    gemm = engine.prefill(ids).logits
    assert kernel is not None and gemm is not None
    assert float(abs(kernel - gemm).max()) < 1e-3 * float(abs(kernel).max())
    assert greedy(engine, ids, 8) == greedy_kernel(engine, ids, 8, monkeypatch)


def greedy_kernel(engine: HostEngine, ids: list[int], n: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setattr(host_quant, "DENSE_ROWS", 10_000)
    return greedy(engine, ids, n)
