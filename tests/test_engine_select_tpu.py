"""`auto` engine choice for bmodels: sail, then bmrt on a device, cmodel only when asked."""

from __future__ import annotations

import sys
import types

import pytest

from appliance.engine import select
from appliance.engine.options import EngineOptions
from appliance.errors import EngineUnavailable


def test_bmodel_without_tpu_explains_the_cmodel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_TPU_BMRT_LIBDIR", raising=False)
    monkeypatch.setattr(select, "tpu_present", lambda: False)
    with pytest.raises(EngineUnavailable, match="no TPU") as err:
        select.resolve_auto("tiny", True, EngineOptions())
    assert err.value.hint and "LLM_TPU_BMRT_LIBDIR" in err.value.hint
    assert select.resolve_auto("tiny", False, EngineOptions()) == "host"
    monkeypatch.setenv("LLM_TPU_BMRT_LIBDIR", "/somewhere/lib")
    assert select.resolve_auto("tiny", True, EngineOptions()) == "bmrt"
    monkeypatch.delenv("LLM_TPU_BMRT_LIBDIR")
    assert select.resolve_auto("tiny", True, EngineOptions(libdir="/x")) == "bmrt"


def test_device_prefers_sail_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "tpu_present", lambda: True)
    pkg, mod = types.ModuleType("sophon"), types.ModuleType("sophon.sail")
    pkg.__path__ = []  # type: ignore[attr-defined]
    mod.__spec__ = types.SimpleNamespace(name="sophon.sail")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "sophon", pkg)
    monkeypatch.setitem(sys.modules, "sophon.sail", mod)
    assert select.resolve_auto("tiny", True, EngineOptions()) == "sail"
