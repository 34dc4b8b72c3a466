"""Default generation options: built-in, the model's generation_config.json, the config; and that the
default chat on the embedded SmolLM2 does not loop where greedy decoding does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.service import TINY_HF, InProcessService, in_process

from appliance.config.schema import GenerationDefaults
from appliance.engine.protocol import Capabilities
from appliance.generation.defaults import model_defaults, read_generation_config
from appliance.generation.types import GenerationOptions


def repeated_sentences(text: str) -> list[str]:
    """Sentences of three words or more that occur twice or more (case and spacing ignored)."""
    sentences = [" ".join(s.lower().split()) for s in re.split(r"(?<=[.!?])\s+|\n+", text)]
    counts = Counter(s for s in sentences if len(s.split()) >= 3)
    return [s for s, n in counts.items() if n > 1]


def test_repeat_detector() -> None:
    assert repeated_sentences("You are a poet. You are a  poet.") == ["you are a poet."]
    assert repeated_sentences("Yes, sure. Yes, sure. You are a poet!") == []  # short replies may repeat
    looped = "You'll need a mug to brew your tea. Then boil water.\nYou'll need a mug to brew your tea."
    assert repeated_sentences(looped) == ["you'll need a mug to brew your tea."]


def test_builtin_then_model_then_config(tmp_path: Path) -> None:
    builtin = GenerationOptions()
    assert (builtin.temperature, builtin.top_p, builtin.repetition_penalty, builtin.repeat_last_n) == (
        0.7,
        0.9,
        1.1,
        64,
    )
    assert read_generation_config([tmp_path]) == {}  # no generation_config.json
    assert model_defaults() == builtin
    fixture = read_generation_config([tmp_path, TINY_HF])  # the first directory that has one counts
    tuned = model_defaults(fixture)
    assert (tuned.temperature, tuned.top_p, tuned.top_k, tuned.repetition_penalty) == (0.7, 0.8, 20, 1.05)
    assert tuned.repeat_last_n == 64 and tuned.max_new_tokens == 1024
    # What a config file sets wins over the model's own; what it leaves out does not.
    configured = model_defaults(fixture, GenerationDefaults.model_validate({"top_p": 0.5, "max_tokens": 99}))
    assert (configured.top_p, configured.top_k, configured.max_new_tokens) == (0.5, 20, 99)
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6}))
    assert read_generation_config([tmp_path]) == {"temperature": 0.0}
    (tmp_path / "generation_config.json").write_text("{not json")
    assert read_generation_config([tmp_path]) == {}
    assert builtin.greedy().is_greedy and builtin.greedy().repetition_penalty == 1.0


def test_the_service_applies_the_models_defaults_and_reports_them(tmp_path: Path) -> None:
    with in_process(tmp_path, generation={"repeat_last_n": 16}) as service:
        sampling = service.client().status()["model"]["sampling"]
    assert sampling["greedy_only"] is False and sampling["note"] is None
    assert sampling["defaults"] == {
        "num_predict": 1024,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "repeat_penalty": 1.05,
        "repeat_last_n": 16,
    }


EVERYDAY = [
    "What is my name?",
    "How do I make a cup of tea?",
    "Give me three tips for sleeping better.",
]


@pytest.mark.timeout(1800)  # about a minute on 2 free cores; far more on a machine shared with heavy jobs
def test_default_chat_on_the_embedded_model_does_not_loop(tmp_path: Path) -> None:
    """200 tokens per everyday prompt with the defaults (seeded, so the run is reproducible): no sentence
    comes twice. Greedy decoding on the same model loops on the tea question, so the check can fail."""
    with in_process(tmp_path, model={"ref": "default", "engine": "host"}) as service:
        client = service.client(timeout=600)
        for seed, prompt in enumerate(EVERYDAY):
            answer = client.chat(
                [{"role": "user", "content": prompt}], options={"num_predict": 200, "seed": seed}
            )
            assert answer["message"]["content"].strip()
            assert repeated_sentences(answer["message"]["content"]) == [], (prompt, answer)
        _one_truth(service)
        greedy = client.chat(
            [{"role": "user", "content": EVERYDAY[1]}],
            options={"num_predict": 200, "temperature": 0, "repeat_penalty": 1.0},
        )
        assert repeated_sentences(greedy["message"]["content"]), greedy


def test_a_fused_greedy_head_is_greedy_only() -> None:
    assert Capabilities(returns_logits=False).greedy_only
    assert not Capabilities(returns_logits=False, device_sampling=True).greedy_only
    assert not Capabilities(returns_logits=True).greedy_only


def _one_truth(service: InProcessService) -> None:
    """`models list` and `models info` agree with what the service says it serves."""
    served = service.client().status()["model"]
    env = {**os.environ, "LLM_TPU_SOCKET": service.socket}

    def cli(*args: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "appliance.cli.main", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        return json.loads(out)

    info = cli("models", "info", "default")
    assert info["max_seq_len"] == served["max_seq_len"] == 4096 and info["trained_max_seq_len"] == 8192
    listed = cli("models", "list")
    assert listed["serving"]["name"] == served["name"] == listed["embedded_model"]["name"]
    assert listed["embedded_model"]["max_seq_len"] == served["max_seq_len"]
