"""The sail engine through the sail emulation (tests/support/fake_sail.py), computing on the cmodel."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator

import pytest
from support.fake_sail import make_fake_sail
from support.vendor_runtime import FIXTURES, cmodel_libdir, require_vendor_runtime

from appliance.engine.sail import SailEngine, import_sail
from appliance.errors import EngineUnavailable

REF = json.loads((FIXTURES / "reference.json").read_text())
P5 = REF["prompts"][0]


@pytest.fixture
def sail_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    require_vendor_runtime()
    mod = make_fake_sail(cmodel_libdir())
    pkg = types.ModuleType("sophon")
    pkg.sail = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sophon", pkg)
    monkeypatch.setitem(sys.modules, "sophon.sail", mod)
    yield mod


def test_old_sail_is_refused_with_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_fake_sail(cmodel_libdir(), version="3.8.0")
    monkeypatch.setitem(sys.modules, "sophon", types.ModuleType("sophon"))
    monkeypatch.setitem(sys.modules, "sophon.sail", old)
    with pytest.raises(EngineUnavailable, match=r"3\.8\.0 is too old"):
        import_sail()
    monkeypatch.delitem(sys.modules, "sophon.sail")
    monkeypatch.setitem(sys.modules, "sophon", None)
    with pytest.raises(EngineUnavailable, match="not importable"):
        import_sail()


@pytest.mark.cmodel
def test_sail_path_gives_torch_tokens_and_device_sampling(sail_module: types.ModuleType) -> None:
    eng = SailEngine.open(FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample_cache_addr_basic.bmodel")
    try:
        assert eng.info.kind == "sail" and eng.info.details["sail"] == "3.9.0"
        assert eng.capabilities.device_sampling
        out = eng.prefill(P5["ids"])
        toks = [out.token]
        for _ in range(2):
            assert toks[-1] is not None
            toks.append(eng.decode(toks[-1]).token)
        assert toks == P5["torch_f32"]["tokens"][:3]
        eng.truncate(3)  # prefix reuse through app-owned KV tensors (addr_mode 0)
        assert eng.prefill(P5["ids"][3:]).token == P5["torch_f32"]["tokens"][0]
    finally:
        eng.close()


@pytest.mark.cmodel
def test_sail_device_sample_head(sail_module: types.ModuleType) -> None:
    from appliance.engine.protocol import DeviceSampling

    case = REF["cmodel"]["runs"][1]["sample_head_check"]["cases"][0]
    eng = SailEngine.open(FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel")
    try:
        req = DeviceSampling(
            temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, recent_ids=tuple(P5["ids"])
        )
        out = eng.prefill(P5["ids"], req)
        assert out.candidates is not None
        assert list(out.candidates[1][:8]) == case["token_idx_first8"]
    finally:
        eng.close()
