"""One source of generation defaults: the config schema. The service, `ask`, `chat --plain` and `bench`
all take the config's model and generation sections, and command-line flags override them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from appliance.cli.main import build_parser
from appliance.config.schema import GenerationDefaults
from appliance.generation.defaults import model_defaults
from appliance.generation.types import GenerationOptions, options_with_defaults

LLM_TPU = [sys.executable, "-m", "appliance.cli.main"]


def test_options_defaults_are_the_config_defaults() -> None:
    assert (
        options_with_defaults(model_defaults(config=GenerationDefaults.model_validate({})))
        == GenerationOptions()
    )
    defaults = model_defaults(config=GenerationDefaults.model_validate({"max_tokens": 7, "temperature": 0.5}))
    given = options_with_defaults(defaults, temperature=0.0, stop=["", "x"])
    assert (given.max_new_tokens, given.temperature, given.stop) == (7, 0.0, ("x",))


def test_no_generation_default_hides_in_argparse() -> None:
    parser = build_parser()
    for command in (["ask", "hi"], ["chat", "--plain"]):
        args = parser.parse_args(command)
        for flag in ("max_tokens", "temperature", "top_k", "top_p", "repeat_penalty", "repeat_last_n"):
            assert getattr(args, flag) is None, (command, flag)


def _ask(config: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [*LLM_TPU, "ask", "--config", str(config), "--json", *args, "Hi, Ada!"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_ask_and_chat_plain_honour_the_config(tiny_hf: Path, tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(
        f"model:\n  ref: {tiny_hf}\n  engine: host\n  threads: 1\n  name: from-config\n"
        "generation:\n  max_tokens: 3\n"
    )
    record = _ask(config)
    assert record["model"] == "from-config" and record["usage"]["completion_tokens"] == 3  # type: ignore[index]
    assert _ask(config, "-n", "5")["usage"]["completion_tokens"] == 5  # type: ignore[index]
    proc = subprocess.run(
        [*LLM_TPU, "chat", "--plain", "--config", str(config)],
        input="Hi, Ada!\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(the answer was cut: length)" in proc.stderr  # 3 tokens, from the config
