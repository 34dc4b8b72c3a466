"""The bmrt engine on the real BM1684X cmodel with the tiny-qwen2 bmodels (slow: few, short runs).

Each decode step costs 0.3-0.6 s on 2 cores, so every bmodel is loaded once per module and runs as
few steps as the check needs. Greedy tokens must equal the torch references in reference.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.engine_steps import greedy_tokens
from support.vendor_runtime import FIXTURES, cmodel_libdir, require_vendor_runtime

from appliance.engine.bmrt.engine import BmrtEngine
from appliance.engine.bmrt.lib import find_libdir, load_libs
from appliance.engine.bmrt.runtime import BmrtBackend
from appliance.engine.protocol import DeviceSampling
from appliance.errors import ContextOverflow, ModelFormatError, ModelLoadError

pytestmark = pytest.mark.cmodel

REF = json.loads((FIXTURES / "reference.json").read_text())
PROMPTS = {p["name"]: p for p in REF["prompts"]}
P5, P17, P40 = (PROMPTS[n] for n in ("p5_plain", "p17_plain", "p40_chat"))
LOGITS = np.load(FIXTURES / "reference_logits.npz")
CMODEL_RUNS = {(r["bmodel"], p["name"]): p["tokens"] for r in REF["cmodel"]["runs"] for p in r["prompts"]}
ENCRYPTED = "tiny-qwen2_bf16_seq64_1dev_sample_nokernel_encrypted_block0_cache0.bmodel"


def open_engine(name: str, **kw: object) -> BmrtEngine:
    require_vendor_runtime()
    return BmrtEngine.open(FIXTURES / name, libdir=cmodel_libdir(), **kw)  # type: ignore[arg-type]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def greedy() -> Iterator[BmrtEngine]:
    eng = open_engine("tiny-qwen2_bf16_seq64_1dev.bmodel")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sample() -> Iterator[BmrtEngine]:
    eng = open_engine("tiny-qwen2_bf16_seq64_1dev_sample.bmodel")
    yield eng
    eng.close()


def test_fused_greedy_build_equals_torch_on_all_24_tokens(greedy: BmrtEngine) -> None:
    assert not greedy.capabilities.returns_logits and not greedy.capabilities.device_sampling
    assert greedy.limits.max_seq_len == 64 and greedy.info.details["runtime"] == "cmodel"
    for p in (P5, P17, P40):
        assert greedy_tokens(greedy, p["ids"], 8) == p["torch_f32"]["tokens"], p["name"]


def test_context_end_stops_cleanly(greedy: BmrtEngine) -> None:
    greedy.truncate(0)
    with pytest.raises(ContextOverflow):
        greedy.prefill([5] * 65)
    greedy.prefill([(7 * i) % 2000 for i in range(62)])
    tok = greedy.decode(1).token
    assert tok is not None and greedy.decode(tok).token is not None
    assert greedy.n_past == 64 == greedy.limits.max_seq_len
    with pytest.raises(ContextOverflow, match="full"):
        greedy.decode(1)
    with pytest.raises(ContextOverflow):
        greedy.prefill([1])
    assert greedy.n_past == 64  # a refused step leaves the cache as it was


def test_generator_reports_context_as_the_reason(greedy: BmrtEngine) -> None:
    from appliance.generation.loop import Generator
    from appliance.generation.templates import make_template
    from appliance.generation.tokenizer import ChatTokenizer
    from appliance.generation.types import Finished, GenerationOptions, Message

    tok = ChatTokenizer.from_dir(FIXTURES / "hf")
    greedy.truncate(0)
    gen = Generator(greedy, tok, make_template("tokenizer", tok))
    text = "Beautiful is better than ugly. Simple beats complex. Flat wins."  # 61 prompt tokens
    opts = GenerationOptions(max_new_tokens=100, ignore_eos=True, reserve_tokens=3)
    events = list(gen.generate([Message("user", text)], opts))
    done = events[-1]
    assert isinstance(done, Finished) and done.done_reason == "context"
    assert greedy.n_past == 64


def test_logits_close_to_torch_and_device_heads(sample: BmrtEngine) -> None:
    assert sample.capabilities.returns_logits and sample.capabilities.device_sampling
    sample.truncate(0)
    sample.greedy_on_device = False
    try:
        out0 = sample.prefill(P5["ids"])
        assert out0.logits is not None and out0.logits.shape == (2048,)
        out1 = sample.decode(int(np.argmax(out0.logits)))
        assert out1.logits is not None
    finally:
        sample.greedy_on_device = True
    for step, got in enumerate((out0.logits, out1.logits)):
        assert cosine(got, LOGITS["p0_bf16"][step]) > 0.999
        assert int(np.argmax(got)) == P5["torch_f32"]["tokens"][step]
    # the greedy_head on device gives the same tokens as torch
    assert greedy_tokens(sample, P5["ids"], 3) == P5["torch_f32"]["tokens"][:3]


def test_sample_head_matches_recorded_semantics(sample: BmrtEngine) -> None:
    check = REF["cmodel"]["runs"][1]["sample_head_check"]
    for case in check["cases"]:
        sample.truncate(0)
        req = DeviceSampling(
            temperature=case["temperature"],
            top_p=case["top_p"],
            top_k=case["top_k"],
            repetition_penalty=case["penalty"],
            recent_ids=tuple(P5["ids"]),
        )
        out = sample.prefill(P5["ids"], req)
        assert out.candidates is not None
        probs, ids = out.candidates
        assert list(ids[:8]) == case["token_idx_first8"]
        assert np.count_nonzero(probs) == case["nonzero_probs"]
        assert abs(float(probs.sum()) - 1.0) < 1e-4
        np.testing.assert_allclose(probs[:8], case["probs_first8"], atol=2e-5)


def test_prefix_reuse_equals_full_prefill(sample: BmrtEngine) -> None:
    ids = P17["ids"]
    first = P17["torch_f32"]["tokens"][0]
    sample.truncate(0)
    sample.prefill(ids[:12])
    assert sample.prefill(ids[12:]).token == first  # 5 new tokens: appended by decode steps
    sample.truncate(4)
    sample.suffix_decode_max = 0
    try:
        assert sample.prefill(ids[4:]).token == first  # long suffix: re-prefill from position 0
    finally:
        sample.suffix_decode_max = 8
    assert sample.n_past == len(ids)
    assert sample.decode(first).token == P17["torch_f32"]["tokens"][1]


@pytest.mark.parametrize(
    ("name", "prompt"),
    [
        ("tiny-qwen2_bf16_seq64_1dev_sample_cache_addr_basic.bmodel", P5),
        ("tiny-qwen2_w4bf16_seq64_1dev_sample.bmodel", P5),
    ],
    ids=["addr-basic", "w4bf16"],
)
def test_layout_variants_give_recorded_tokens(name: str, prompt: dict) -> None:
    eng = open_engine(name)
    try:
        want = CMODEL_RUNS[(name, prompt["name"])][:4]
        if "w4" not in name:
            assert want == prompt["torch_f32"]["tokens"][:4]
        assert greedy_tokens(eng, prompt["ids"], 4) == want
        if "addr_basic" in name:  # app-owned KV buffers survive other nets: continue a prefix
            assert eng.info.details["layout"].endswith("KV app buffers")
            eng.truncate(3)
            assert eng.prefill(prompt["ids"][3:]).token == want[0]
    finally:
        eng.close()


def test_encrypted_bmodel_needs_and_uses_the_cipher_library() -> None:
    with pytest.raises(ModelFormatError, match="encrypted") as err:
        open_engine(ENCRYPTED)
    assert err.value.hint and "decrypt_lib" in err.value.hint
    eng = open_engine(ENCRYPTED, decrypt_lib=FIXTURES / "cipher_xor.so")
    try:
        assert greedy_tokens(eng, P5["ids"], 2) == P5["torch_f32"]["tokens"][:2]
    finally:
        eng.close()


def test_runtime_failures_become_typed_errors(tmp_path: Path) -> None:
    require_vendor_runtime()
    libs = load_libs(find_libdir(cmodel_libdir()))
    # the runtime itself refuses the encrypted file when no key is given: its own message is kept
    with pytest.raises(ModelLoadError, match="could not load") as err:
        BmrtBackend(libs, FIXTURES / ENCRYPTED)
    assert "broken" in err.value.message
    bad = tmp_path / "cut.bmodel"
    bad.write_bytes((FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel").read_bytes()[:30000])
    with pytest.raises(ModelFormatError, match="truncated"):
        open_engine(str(bad))
    junk = tmp_path / "junk.bmodel"
    junk.write_bytes(b"\xee\xaa\x55\xff" + bytes(range(256)) * 40)
    with pytest.raises(ModelFormatError):
        open_engine(str(junk))


def test_dynamic_prefill_variant() -> None:
    name = "tiny-qwen2_bf16_seq64_1dev_sample_dynamic.bmodel"
    eng = open_engine(name)
    try:
        assert "dynamic prefill" in eng.info.details["layout"]
        want = P17["torch_f32"]["tokens"][:4]
        assert CMODEL_RUNS[(name, "p17_plain")][:4] == want
        assert greedy_tokens(eng, P17["ids"], 4) == want
    finally:
        eng.close()
