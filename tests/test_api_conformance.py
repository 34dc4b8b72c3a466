"""Issue 13: the stock `ollama` and `openai` clients against the real service, over the Unix socket and TCP.

Every endpoint and field the issue names: /api/generate (stream and not, raw, system, context), /api/show,
/api/version, /api/embed (501), /api/pull and /api/delete (admin: socket yes, TCP no), list/ps sizes,
prompt_eval_count, load_duration; /v1/models/{id}, /v1/completions (stream and not), the OpenAI fields
accepted and ignored, presence/frequency penalties. The service is the real one with the scripted engine
on the fixture tokenizer (no TPU here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest
from support.service import TINY_HF, InProcessService, http_client, in_process
from support.stock_clients import VIA, tcp_settings
from support.stock_clients import ollama_client as _ollama
from support.stock_clients import openai_client as _openai
from support.stock_clients import raw_client as _raw

from appliance.generation.tokenizer import ChatTokenizer
from appliance.service.app import ROUTES
from appliance.service.model_info import files_size
from appliance.service.schemas import OPENAI_IGNORED_FIELDS

SCRIPT = "The quick brown fox jumps over the lazy dog. "
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("conformance")
    with in_process(tmp, server={"tcp": tcp_settings(tmp)}, model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model store of this test's own (the service reads LLM_TPU_MODELS_DIR per request)."""
    root = tmp_path / "store"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(root))
    return root


def _scripted(text: str) -> bool:
    """The scripted engine's answer: the script, repeated, cut anywhere."""
    return (SCRIPT * 50).startswith(text)


# -- Ollama ------------------------------------------------------------------------------------------
@VIA
def test_generate_whole_and_streamed(service: InProcessService, via: str) -> None:
    client = _ollama(service, via)
    whole = client.generate(model="scripted", prompt="Hi", options={"num_predict": 5}, context=[1, 2, 3])
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 5
    assert whole.response and _scripted(whole.response)
    parts = list(
        client.generate(
            model="scripted", prompt="Hi", system="Be brief. " * 20, stream=True, options={"num_predict": 6}
        )
    )
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    text = "".join(p.response or "" for p in parts)
    assert text and _scripted(text)
    # the system prompt is part of the templated prompt: longer than the template's default one
    assert (parts[-1].prompt_eval_count or 0) > (whole.prompt_eval_count or 0)
    loaded = client.generate(model="scripted", prompt="")  # Ollama: an empty prompt only loads
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""


def test_generate_raw_takes_the_prompt_as_is(service: InProcessService) -> None:
    client = _ollama(service, "unix")
    prompt = "Once upon a time"
    raw = client.generate(model="scripted", prompt=prompt, raw=True, options={"num_predict": 3})
    expected = len(ChatTokenizer.from_dir(TINY_HF).encode(prompt))
    assert raw.prompt_eval_count == expected  # no template around it
    templated = client.generate(model="scripted", prompt=prompt, options={"num_predict": 3})
    assert (templated.prompt_eval_count or 0) > expected
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="scripted", prompt=prompt, raw=True, system="x")
    assert info.value.status_code == 400 and "system" in info.value.error
    for field, value in (
        ("suffix", "end"),
        ("template", "{{ .Prompt }}"),
        ("format", {"type": "object", "properties": 5}),
    ):
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model="scripted", prompt=prompt, **{field: value})
        assert info.value.status_code == 400 and field in info.value.error


def test_prompt_eval_count_is_the_whole_prompt_and_load_is_not_charged(service: InProcessService) -> None:
    client = _raw(service, "unix")
    history = [{"role": "user", "content": "Tell me about foxes."}]
    first = client.post("/api/chat", json={"messages": history, "stream": False}).json()
    # the service loaded its model at start-up: no request pays for that load
    assert first["load_duration"] == 0
    history += [first["message"], {"role": "user", "content": "And then?"}]
    second = client.post("/api/chat", json={"messages": history, "stream": False}).json()
    assert second["reused_tokens"] > 0  # the first turn came from the KV cache ...
    assert second["prompt_eval_count"] == second["prompt_tokens"] > second["reused_tokens"]  # ... yet counts


@VIA
def test_show_version_and_embed(service: InProcessService, via: str) -> None:
    client = _ollama(service, via)
    shown = client.show("scripted")
    assert shown.capabilities == ["completion"]
    info = shown.modelinfo or {}
    max_seq = service.runner.state.model.engine.limits.max_seq_len  # type: ignore[union-attr]
    assert info["llm_tpu.context_length"] == max_seq == info["scripted.context_length"]
    assert info["llm_tpu.sampling"] == "host" and info["llm_tpu.engine"] == "scripted"
    assert info["llm_tpu.nets"] == []  # the scripted engine runs no bmodel
    assert f"num_ctx {max_seq}" in (shown.parameters or "")
    assert re.search(r"^temperature [0-9.]+$", shown.parameters or "", re.M)
    assert "<|im_start|>" in (shown.template or "")  # the tokenizer's own chat template
    assert shown.details is not None and shown.details.family == "scripted"
    with pytest.raises(ollama.ResponseError) as info_err:
        client.show("someone-else")
    assert info_err.value.status_code == 404
    version = _raw(service, via).get("/api/version")
    assert version.status_code == 200 and re.match(r"^\d+\.\d+", version.json()["version"])
    with pytest.raises(ollama.ResponseError) as embed:
        client.embed(model="scripted", input="hello")
    assert embed.value.status_code == 501 and "embeddings" in embed.value.error
    body = _raw(service, via).post("/api/embed", json={"model": "scripted", "input": "x"}).json()
    assert body["code"] == "embeddings_not_supported" and body["hint"]


@VIA
def test_list_and_ps_report_real_sizes(service: InProcessService, via: str, store: Path) -> None:
    client = _ollama(service, via)
    size = files_size(TINY_HF)  # the scripted model's files: the fixture tokenizer directory
    listed = client.list().models
    assert listed[0].model == "scripted" and listed[0].size == size > 0
    running = client.ps().models
    assert [m.model for m in running] == ["scripted"]
    assert running[0].size == size and running[0].size_vram == 0  # no TPU memory on the scripted engine
    assert running[0].context_length == service.runner.state.model.engine.limits.max_seq_len  # type: ignore[union-attr]


def test_pull_and_delete_on_the_socket(service: InProcessService, store: Path) -> None:
    client = _ollama(service, "unix")
    raw = _raw(service, "unix")
    body = raw.post("/api/pull", json={"model": str(TINY_HF), "install_as": "tiny-a", "stream": False})
    assert body.status_code == 200 and body.json()["status"] == "success", body.text
    assert (store / "tiny-a" / "manifest.json").is_file()
    progress = list(client.pull(str(TINY_HF), stream=True))  # the stock client, streamed; name derived
    assert progress[-1].status == "success"
    names = [m.model for m in client.list().models]
    assert names[0] == "scripted" and "tiny-a" in names and len(names) == 3
    tiny = next(m for m in client.list().models if m.model == "tiny-a")
    assert tiny.size == sum(
        p.stat().st_size for p in (store / "tiny-a").iterdir() if p.name != "manifest.json"
    )
    assert client.delete("tiny-a").status == "success"
    assert not (store / "tiny-a").exists()
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete("tiny-a")
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as loaded:
        client.delete("scripted")
    assert loaded.value.status_code == 409 and "loaded" in loaded.value.error
    with pytest.raises(ollama.ResponseError) as missing:
        client.pull(str(store / "nothing-here"))
    assert "does not exist" in missing.value.error or missing.value.status_code >= 400


def test_pull_and_delete_are_refused_over_tcp(service: InProcessService, store: Path) -> None:
    client = _ollama(service, "tcp")
    for call in (lambda: client.pull(str(TINY_HF)), lambda: client.delete("anything")):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 403 and "admin operation" in info.value.error
    body = _raw(service, "tcp").post("/api/pull", json={"model": str(TINY_HF)}).json()
    assert body["code"] == "admin_api_disabled" and "server.tcp.admin_api" in body["hint"]
    assert not store.exists()  # nothing was installed


def test_pull_over_tcp_when_the_config_allows_it(tmp_path: Path, store: Path) -> None:
    with in_process(tmp_path, server={"tcp": tcp_settings(tmp_path, admin_api=True)}) as svc:
        client = _ollama(svc, "tcp")
        assert client.pull(str(TINY_HF)).status == "success"
        assert [m.model for m in client.list().models][1:] == ["hf"]
        assert client.delete("hf").status == "success"


def test_pull_and_delete_without_model_administration_are_501(tmp_path: Path, store: Path) -> None:
    """A service not started by `llm-tpu serve` (no ModelAdmin passed in) says so instead of failing."""
    with in_process(tmp_path, admin=False) as svc:
        for method, path in (("post", "/api/pull"), ("delete", "/api/delete")):
            reply = http_client(svc).request(method, path, json={"model": str(TINY_HF)})
            assert reply.status_code == 501, reply.text
            body = reply.json()
            assert body["code"] == "admin_api_unavailable" and "llm-tpu models" in body["hint"]
    assert not store.exists()


# -- OpenAI ------------------------------------------------------------------------------------------
@VIA
def test_openai_model_by_id(service: InProcessService, via: str) -> None:
    client = _openai(service, via)
    model = client.models.retrieve("scripted")
    assert model.id == "scripted" and model.object == "model" and model.owned_by == "llm-tpu"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-4o")
    assert "gpt-4o" in str(info.value)


@VIA
def test_openai_completions_whole_and_streamed(service: InProcessService, via: str) -> None:
    client = _openai(service, via)
    done = client.completions.create(model="scripted", prompt="Once upon a time", max_tokens=4)
    assert done.object == "text_completion" and done.choices[0].finish_reason == "length"
    assert done.choices[0].text and _scripted(done.choices[0].text)
    expected = len(ChatTokenizer.from_dir(TINY_HF).encode("Once upon a time"))
    assert done.usage is not None and done.usage.prompt_tokens == expected  # as is: no chat template
    assert done.usage.completion_tokens == 4
    stream = client.completions.create(
        model="scripted",
        prompt=["Once upon a time"],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text and _scripted(text)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    for bad, needle in (({"echo": True}, "echo"), ({"prompt": ["a", "b"]}, "prompts"), ({"n": 2}, "n=2")):
        args = {"model": "scripted", "prompt": "x", **bad}
        with pytest.raises(openai.BadRequestError, match=needle):
            client.completions.create(**args)  # type: ignore[call-overload]


@VIA
def test_openai_harmless_fields_are_accepted(service: InProcessService, via: str) -> None:
    client = _openai(service, via)
    done = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=3,
        store=True,
        metadata={"app": "test"},
        user="user-1",
        parallel_tool_calls=False,
        service_tier="auto",
        prompt_cache_key="conversation-1",
        reasoning_effort="low",
        modalities=["text"],
        verbosity="low",
    )
    assert done.choices[0].message.content and done.usage is not None
    assert done.usage.completion_tokens == 3
    assert set(OPENAI_IGNORED_FIELDS) == {
        "store",
        "metadata",
        "user",
        "parallel_tool_calls",
        "service_tier",
        "prompt_cache_key",
        "reasoning_effort",
        "modalities",
        "verbosity",
    }
    for field in OPENAI_IGNORED_FIELDS:  # the README lists each
        assert f"`{field}`" in README.read_text()
    with pytest.raises(openai.BadRequestError, match="modalities"):
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "Hi"}], modalities=["text", "audio"]
        )


def test_penalties_are_honoured_on_the_host_sampler(tmp_path: Path) -> None:
    """The tiny host model returns logits: presence/frequency penalties change a greedy answer (a tiny
    random model repeats itself, the penalties push it off its repeated tokens)."""
    with in_process(tmp_path, model={"ref": str(TINY_HF), "engine": "host", "threads": 1}) as svc:
        client = _openai(svc, "unix")
        name = client.models.list().data[0].id
        args = {"model": name, "prompt": "Hello hello hello", "max_tokens": 16, "temperature": 0}
        plain = client.completions.create(**args).choices[0].text  # type: ignore[call-overload]
        again = client.completions.create(**args).choices[0].text  # type: ignore[call-overload]
        assert plain == again  # greedy: any difference below comes from the penalties
        penalized = client.completions.create(**args, presence_penalty=2.0, frequency_penalty=2.0)  # type: ignore[call-overload]
        assert penalized.choices[0].text != plain
        body = _raw(svc, "unix").post(
            "/api/generate",
            json={
                "model": name,
                "prompt": "Hello hello hello",
                "raw": True,
                "stream": False,
                "options": {"num_predict": 16, "temperature": 0, "frequency_penalty": 2.0},
            },
        )
        assert body.status_code == 200 and body.json()["response"] != plain, body.text


# -- the route table, /openapi.json and the README agree ---------------------------------------------
def test_route_table_openapi_and_readme_agree(service: InProcessService) -> None:
    doc = json.loads(_raw(service, "unix").get("/openapi.json").text)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    table = {(r.method, r.path) for r in ROUTES}
    assert documented == table
    text = README.read_text()
    section = text.split("Endpoints (the route table")[1].split("Sampling parameters are honoured")[0]
    in_readme = set(re.findall(r"`(?:(GET|POST|DELETE) )?(/[a-z0-9_./{}-]*)`", section))
    readme_paths = {p for _, p in in_readme}
    assert readme_paths == {r.path for r in ROUTES}, readme_paths ^ {r.path for r in ROUTES}
    for method, path in in_readme:  # a method named in the README is the table's
        if method:
            assert (method, path) in table, (method, path)
