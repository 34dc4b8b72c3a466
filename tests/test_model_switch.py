"""Models on demand (issue 13): a request naming another installed model switches to it, keep_alive unloads,
model.pinned refuses, and a model that cannot fit the free TPU heap is refused before anything is unloaded.

The real service with the scripted engine; the installed models are the fixture tokenizer directory
imported through /api/pull. The live ION heaps cannot exist here: the memory check's device probe is a
stand-in returning heap figures (the boundary `llm-tpu serve` fills from provisioning.board.tpu_status).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.service import http_client, in_process, install_model, running_models

from appliance.config.schema import ModelSection
from appliance.errors import InsufficientTPUMemory
from appliance.models.store import ModelStore
from appliance.service.model_info import installed_entry

SLOW = {"scripted": {"step_delay_ms": 20.0}}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(root))
    return root


def _chat(client: httpx.Client, model: str, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": False, **extra}
    body.setdefault("options", {"num_predict": 3})
    reply = client.post("/api/chat", json=body)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def test_a_request_naming_another_model_switches_to_it(tmp_path: Path, store: Path) -> None:
    with in_process(tmp_path, model=SLOW) as svc:
        client = http_client(svc)
        install_model(client, "tiny-b")
        first = _chat(client, "scripted")
        assert first["load_duration"] == 0  # the start-up load is nobody's
        # a long answer from the loaded model is running when a request names the other one
        results: dict[str, Any] = {}

        def long_answer() -> None:
            results["long"] = _chat(client, "scripted", options={"num_predict": 40})

        runner = threading.Thread(target=long_answer)
        runner.start()
        time.sleep(0.2)
        switched = _chat(client, "tiny-b")
        runner.join(30)
        long = results["long"]
        assert long["done_reason"] == "length" and long["eval_count"] == 40  # it ran to its end first
        assert switched["model"] == "tiny-b" and switched["load_duration"] > 0  # this request paid the load
        assert [m["model"] for m in running_models(client)] == ["tiny-b"]
        again = _chat(client, "tiny-b")
        assert again["load_duration"] == 0
        back = _chat(client, "scripted")
        assert back["model"] == "scripted" and back["load_duration"] > 0
        assert [m["model"] for m in running_models(client)] == ["scripted"]
        load = client.post("/api/generate", json={"model": "tiny-b", "stream": False}).json()
        assert load["done_reason"] == "load" and load["load_duration"] > 0  # an empty prompt only loads
        assert [m["model"] for m in running_models(client)] == ["tiny-b"]
        assert _chat(client, "tiny-b")["load_duration"] == 0  # the load was the loading request's
        missing = client.post(
            "/api/chat", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
        )
        assert missing.status_code == 404 and "not installed" in missing.json()["error"]
        assert "tiny-b" in missing.json()["hint"]


def test_keep_alive_unloads(tmp_path: Path, store: Path) -> None:
    with in_process(tmp_path) as svc:
        client = http_client(svc)
        _chat(client, "scripted", keep_alive=-1)
        assert running_models(client)[0]["expires_at"].startswith("9999")
        unload = client.post("/api/generate", json={"model": "scripted", "keep_alive": 0}).json()
        assert unload["done_reason"] == "unload"
        assert running_models(client) == []
        assert client.get("/health").json()["status"] == "ok"  # unloaded is not broken
        reloaded = _chat(client, "scripted", keep_alive="1s")
        assert reloaded["load_duration"] > 0
        expires = running_models(client)[0]["expires_at"]
        assert not expires.startswith("9999")
        deadline = time.monotonic() + 10
        while running_models(client) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_models(client) == []  # unloaded after its keep_alive of idle time
        _chat(client, "scripted", keep_alive="1s")
        _chat(client, "scripted")  # no keep_alive: the default again (model.keep_alive, -1: never)
        assert running_models(client)[0]["expires_at"].startswith("9999")
        bad = client.post(
            "/api/chat", json={"messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}
        )
        assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]


def test_pinned_model_never_switches_or_unloads(tmp_path: Path, store: Path) -> None:
    with in_process(tmp_path, model={"pinned": True}) as svc:
        client = http_client(svc)
        install_model(client, "tiny-b")
        refused = client.post(
            "/api/chat", json={"model": "tiny-b", "messages": [{"role": "user", "content": "x"}]}
        )
        assert refused.status_code == 404 and "model.pinned" in refused.json()["hint"]
        _chat(client, "scripted", keep_alive=0)
        time.sleep(0.5)
        assert [m["model"] for m in running_models(client)] == ["scripted"]
        assert running_models(client)[0]["expires_at"].startswith("9999")
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["scripted"]


def test_a_model_that_cannot_fit_is_refused_before_unloading(tmp_path: Path, store: Path) -> None:
    def probe() -> dict[str, Any]:
        return {"devices": [], "heaps": {"npu": {"name": "npu", "size_mib": 1000, "used_mib": 700}}}

    with in_process(tmp_path, device_probe=probe) as svc:
        client = http_client(svc)
        install_model(client, "tiny-b")
        installed = next(m for m in ModelStore().installed()[0] if m.name == "tiny-b")
        switcher = svc.runner.switcher
        tpu = ModelSection(ref=str(installed.path), engine="auto")

        def needing(mib: int) -> Any:
            return dataclasses.replace(
                installed,
                manifest=dataclasses.replace(installed.manifest, engine="bmrt", memory_need_bytes=mib << 20),
            )

        assert installed_entry(needing(300))["size_vram"] == 300 << 20  # /api/tags: the need the picker shows
        assert installed_entry(installed)["size_vram"] == 0  # a host model holds no TPU memory
        switcher.check_memory(needing(300), tpu)  # 300 MiB free: fits
        with pytest.raises(InsufficientTPUMemory) as info:
            switcher.check_memory(needing(301), tpu)
        assert "needs 301 MiB" in info.value.message and "300 MiB free" in info.value.message
        assert (info.value.http_status, info.value.code) == (507, "model_does_not_fit")  # not a retryable 503
        switcher.check_memory(needing(5000), ModelSection(ref=str(installed.path), engine="host"))  # no TPU
        assert json.loads(client.get("/api/ps").text)["models"][0]["model"] == "scripted"
