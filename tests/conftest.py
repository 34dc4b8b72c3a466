"""Shared fixtures: the tiny Qwen2 fixture model (tests/fixtures/tiny-qwen2) and its reference data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-qwen2"
TINY_HF = TINY / "hf"


@pytest.fixture(scope="session")
def tiny_hf() -> Path:
    return TINY_HF


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return json.loads((TINY / "reference.json").read_text())


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's installed models or running service; the embedded model cache is
    shared per run."""
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models"))
    monkeypatch.setenv("LLM_TPU_SOCKET", str(tmp_path_factory.getbasetemp() / "no-service.sock"))
    monkeypatch.setenv("LLM_TPU_CACHE_DIR", str(_cache_dir(tmp_path_factory)))


def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's LLM_TPU_CACHE_DIR (LLM_TPU_TEST_CACHE_DIR keeps one across runs)."""
    return Path(os.environ.get("LLM_TPU_TEST_CACHE_DIR") or tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(scope="session", autouse=True)
def _compiled_host_step(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The host engine's compiled decode step, built once per run before any engine loads (about 10 s):
    every host engine of the run, in this process or in a service it starts, then decodes through it
    from its first token, instead of switching between two tokens when a background build ends."""
    from appliance.engine import host_kernels

    step = host_kernels.compiled_step(_cache_dir(tmp_path_factory) / "host-kernels")
    assert step.wait(host_kernels.BUILD_TIMEOUT_S) is not None, step.status
