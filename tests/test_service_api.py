"""The HTTP API on a real Unix socket (scripted engine, fixture tokenizer), driven with curl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import InProcessService, curl, in_process

from appliance.service.schemas import ChatCompletion, ChatCompletionChunk, HealthBody, OllamaChatChunk

SCRIPT = "The quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    tmp = tmp_path_factory.mktemp("svc")
    with in_process(tmp, model={"scripted": {"text": SCRIPT}}) as svc:
        yield svc


def _chat(**extra: object) -> str:
    return json.dumps({"model": "scripted", "messages": [{"role": "user", "content": "Hi, Ada!"}], **extra})


def test_ollama_stream_chunks_and_final_record(service: InProcessService) -> None:
    status, body = curl(service.socket, "/api/chat", _chat(options={"num_predict": 6}))
    assert status == 200
    chunks = [OllamaChatChunk.model_validate_json(line) for line in body.splitlines()]
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    text = "".join(c.message["content"] for c in chunks)
    assert SCRIPT.startswith(text) and len(text) > 5
    final = chunks[-1]
    assert final.done_reason == "length"
    assert final.eval_count == 6
    assert final.prompt_eval_count and final.prompt_eval_count > 0
    assert final.total_duration and final.total_duration >= (final.eval_duration or 0) > 0


def test_ollama_non_stream_and_stop_string(service: InProcessService) -> None:
    status, body = curl(
        service.socket, "/api/chat", _chat(stream=False, options={"stop": ["fox"], "num_predict": 50})
    )
    assert status == 200
    data = OllamaChatChunk.model_validate_json(body)
    assert data.done and data.done_reason == "stop"
    assert data.message["content"] == "The quick brown "


def test_openai_stream_shape_with_usage(service: InProcessService) -> None:
    payload = _chat(stream=True, max_tokens=4, stream_options={"include_usage": True})
    status, body = curl(service.socket, "/v1/chat/completions", payload)
    assert status == 200
    events = [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert chunks[0].choices[0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2].choices[0]["finish_reason"] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    text = "".join(c.choices[0]["delta"].get("content", "") for c in chunks if c.choices)
    assert SCRIPT.startswith(text)
    assert len({c.id for c in chunks}) == 1


def test_openai_non_stream_with_usage(service: InProcessService) -> None:
    status, body = curl(service.socket, "/v1/chat/completions", _chat(max_tokens=3, temperature=0.7, seed=1))
    assert status == 200
    data = ChatCompletion.model_validate_json(body)
    assert data.choices[0]["finish_reason"] == "length"
    assert data.usage.completion_tokens == 3
    assert data.usage.total_tokens == data.usage.prompt_tokens + 3


def test_host_header_is_irrelevant_over_the_socket(service: InProcessService) -> None:
    status, body = curl(service.socket, "/health", None, "-H", "Host: evil.example.com:1234")
    assert status == 200
    assert HealthBody.model_validate_json(body).status == "ok"


def test_read_only_endpoints(service: InProcessService) -> None:
    status, body = curl(service.socket, "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "scripted"
    status, body = curl(service.socket, "/api/tags")
    assert status == 200 and json.loads(body)["models"][0]["name"] == "scripted"
    status, body = curl(service.socket, "/api/ps")
    assert status == 200 and json.loads(body)["models"][0]["model"] == "scripted"
    status, body = curl(service.socket, "/api/status")
    st = json.loads(body)
    assert st["status"] == "ready"
    assert st["model"]["engine"] == "scripted" and st["model"]["max_seq_len"] == 4096
    assert st["queue"] == {"running": 0, "waiting": 0, "size": 4}
    assert st["versions"]["llm-tpu-appliance"] and st["uptime_s"] > 0
    assert "devices" in st["tpu"]
    status, body = curl(service.socket, "/openapi.json")
    doc = json.loads(body)
    for path in (
        "/api/chat",
        "/v1/chat/completions",
        "/v1/models",
        "/api/tags",
        "/api/ps",
        "/api/status",
        "/health",
        "/metrics",
        "/openapi.json",
    ):
        assert path in doc["paths"], path
    assert "OllamaChatRequest" in doc["components"]["schemas"]


def test_metrics_count_requests_tokens_and_latency(service: InProcessService) -> None:
    curl(service.socket, "/api/chat", _chat(options={"num_predict": 5}))
    status, body = curl(service.socket, "/metrics")
    assert status == 200
    lines = body.splitlines()

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))

    assert value('llm_tpu_requests_total{route="/api/chat",status="200"}') >= 1
    assert value("llm_tpu_generated_tokens_total") >= 5
    assert value("llm_tpu_prompt_tokens_total") > 0
    assert value("llm_tpu_time_to_first_token_seconds_count") >= 1
    assert value("llm_tpu_token_latency_seconds_count") >= 4
    assert 'llm_tpu_model_state{llm_tpu_model_state="ready"} 1.0' in lines
    assert value("llm_tpu_queue_depth") == 0


def test_sampling_parameters_are_honoured_or_rejected(service: InProcessService) -> None:
    # Honoured: the stop string and the token limit change the answer.
    _, short = curl(service.socket, "/v1/chat/completions", _chat(max_tokens=2))
    _, longer = curl(service.socket, "/v1/chat/completions", _chat(max_tokens=5))
    assert json.loads(short)["usage"]["completion_tokens"] == 2
    assert json.loads(longer)["usage"]["completion_tokens"] == 5
    # Rejected by name, never ignored.
    for payload, needle in (
        (_chat(frequency_penalty=2.5), "frequency_penalty"),
        (_chat(n=2), "only one choice"),
        (_chat(logprobs=True), "logprobs"),
        (_chat(temperature=-1), "temperature"),
        (_chat(top_p=0), "top_p"),
    ):
        status, body = curl(service.socket, "/v1/chat/completions", payload)
        assert status == 400, payload
        assert needle in json.loads(body)["error"]["message"]
    status, body = curl(service.socket, "/api/chat", _chat(options={"mirostat": 2}))
    assert status == 400
    err = json.loads(body)
    assert "options.mirostat: unknown field" in err["error"] and "temperature" in err["hint"]


BAD_INPUTS = [
    ("/api/chat", b"{not json", 400, "not valid JSON"),
    ("/api/chat", b"[1, 2]", 400, "must be a JSON object"),
    ("/api/chat", b'{"messages": "hello"}', 400, "messages"),
    ("/api/chat", b'{"messages": [{"role": "user", "content": 5}]}', 400, "messages.0.content"),
    ("/api/chat", b'{"messages": [{"role": "robot", "content": "x"}]}', 400, "role"),
    ("/api/chat", b'{"messages": []}', 400, "messages is empty"),
    (
        "/api/chat",
        b'{"messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}}',
        400,
        "options.temperature",
    ),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "\xff\xfe bad"}]}', 400, "not valid UTF-8"),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "surrogate"),
    ("/api/chat", b"", 400, "empty"),
    (
        "/api/chat",
        b'{"model": "llama3", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "not served here",
    ),
    (
        "/api/chat",
        b'{"model": "../x", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "invalid model name",
    ),
    (
        "/v1/chat/completions",
        b'{"model": "/etc/passwd", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "invalid model name",
    ),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
        400,
        "only text parts",
    ),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
        400,
        "max_tokens",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), BAD_INPUTS)
def test_bad_input_gets_4xx_json(
    service: InProcessService, path: str, body: bytes, status: int, needle: str
) -> None:
    got, text = curl(service.socket, path, body)
    assert got == status, text
    data = json.loads(text)
    message = data["error"]["message"] if isinstance(data["error"], dict) else data["error"]
    assert needle in message


def test_huge_body_and_unknown_routes(service: InProcessService, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b'{"messages": [{"role": "user", "content": "' + b"a" * (10 * 1024 * 1024) + b'"}]}')
    got, text = curl(
        service.socket, "/api/chat", None, "-H", "Content-Type: application/json", "--data-binary", f"@{big}"
    )
    assert got == 413 and "larger than" in json.loads(text)["error"]
    got, text = curl(service.socket, "/nope")
    assert got == 404 and "no route /nope" in json.loads(text)["error"]
    got, text = curl(service.socket, "/api/chat")
    assert got == 405 and "GET is not allowed" in json.loads(text)["error"]
    assert curl(service.socket, "/health")[0] == 200  # still up


def test_message_over_the_context_is_a_400(tmp_path: Path) -> None:
    with in_process(tmp_path, model={"scripted": {"text": SCRIPT}}) as svc:
        svc.engine._limits = type(svc.engine.limits)(max_seq_len=64, vocab_size=svc.engine.limits.vocab_size)
        long_text = "word " * 400
        status, body = curl(
            svc.socket, "/api/chat", json.dumps({"messages": [{"role": "user", "content": long_text}]})
        )
        assert status == 400, body
        err = json.loads(body)
        assert err["code"] == "context_length_exceeded"
        status, body = curl(svc.socket, "/api/chat", _chat(options={"num_predict": 3}))
        assert status == 200  # the engine serves the next request
