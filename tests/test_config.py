"""Config layering, provenance, validation messages, the example config and `llm-tpu config`."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.cli.options import config_from_args
from appliance.config import ApplianceConfig, load_config
from appliance.config.loader import _leaves
from appliance.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "etc" / "appliance.yaml"
LLM_TPU = str(Path(sys.executable).with_name("llm-tpu"))


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_without_files(tmp_path: Path) -> None:
    loaded = load_config(None, env={})
    assert loaded.config == ApplianceConfig()
    assert all(source == "default" for _, _, source in loaded.effective())


def test_layers_later_wins_with_provenance(tmp_path: Path) -> None:
    main = _write(tmp_path / "appliance.yaml", {"scheduler": {"queue_size": 3, "drain_timeout_s": 5}})
    _write(
        tmp_path / "conf.d" / "10-model.yaml",
        {"model": {"ref": "qwen2-1.5b"}, "scheduler": {"queue_size": 5}},
    )
    _write(tmp_path / "conf.d" / "20-later.yaml", {"scheduler": {"queue_size": 7}})
    _write(tmp_path / "conf.d" / "ignored.txt", "scheduler: {queue_size: 99}")
    env = {"LLM_TPU_SERVER__TCP__PORT": "9000", "LLM_TPU_MODELS_DIR": "/not/config"}
    loaded = load_config(main, env=env, overrides={"model.engine": "host"})
    cfg = loaded.config
    assert cfg.scheduler.queue_size == 7
    assert cfg.scheduler.drain_timeout_s == 5
    assert cfg.model.ref == "qwen2-1.5b"
    assert cfg.server.tcp.port == 9000
    assert cfg.model.engine == "host"
    assert loaded.source_of("scheduler.queue_size") == str(tmp_path / "conf.d" / "20-later.yaml")
    assert loaded.source_of("scheduler.drain_timeout_s") == str(main)
    assert loaded.source_of("model.ref").endswith("10-model.yaml")
    assert loaded.source_of("server.tcp.port") == "env LLM_TPU_SERVER__TCP__PORT"
    assert loaded.source_of("model.engine") == "command line"
    assert loaded.source_of("logging.level") == "default"
    assert [p.name for p in loaded.files] == ["appliance.yaml", "10-model.yaml", "20-later.yaml"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"scheduler": {"queue_size": -1}},
            "scheduler.queue_size: Input should be greater than or equal to 0",
        ),
        ({"scheduler": {"queue_sise": 3}}, "scheduler.queue_sise: unknown key"),
        ({"model": {"engine": "gpu"}}, "model.engine: Input should be"),
        (
            {"model": {"host_quant": "int3"}},
            "model.host_quant: Input should be 'auto', 'none', 'int8' or 'int4'",
        ),
        ({"server": {"socket_mode": "0999"}}, "server.socket_mode"),
        ({"server": {"tcp": {"port": "http"}}}, "server.tcp.port"),
    ],
)
def test_invalid_values_name_file_key_and_reason(
    tmp_path: Path, content: dict[str, object], expected: str
) -> None:
    main = _write(tmp_path / "appliance.yaml", {})
    bad = _write(tmp_path / "conf.d" / "50-bad.yaml", content)
    with pytest.raises(ConfigError) as info:
        load_config(main, env={})
    assert f"{bad}: {expected}" in info.value.message
    assert info.value.hint


def test_env_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env LLM_TPU_SCHEDULER__QUEUE_SIZE: scheduler.queue_size"):
        load_config(_write(tmp_path / "a.yaml", {}), env={"LLM_TPU_SCHEDULER__QUEUE_SIZE": "lots"})


def test_yaml_syntax_and_shape_errors(tmp_path: Path) -> None:
    broken = _write(tmp_path / "appliance.yaml", "scheduler:\n  queue_size: [1\n")
    with pytest.raises(ConfigError, match=r"appliance.yaml: not valid YAML at line \d+"):
        load_config(broken, env={})
    listy = _write(tmp_path / "b" / "appliance.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", env={})


def test_socket_mode_octal_forms(tmp_path: Path) -> None:
    for raw, want in (
        ("socket_mode: 0640", 0o640),
        ("socket_mode: '0600'", 0o600),
        ("socket_mode: 432", 0o660),
    ):
        cfg = load_config(_write(tmp_path / "c" / "appliance.yaml", f"server:\n  {raw}\n"), env={}).config
        assert cfg.server.socket_mode == want, raw


def test_example_config_documents_every_key_with_its_default() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    example_keys = {key for key, _ in _leaves(example)}
    # generation: shown commented out, since a value set in a config file overrides the model's own
    section = EXAMPLE.read_text().split("\ngeneration: {}\n")[1].split("\n\n")[0]
    example_keys |= {f"generation.{key}" for key in re.findall(r"^  # (\w+): ", section, re.M)}
    schema_keys = {key for key, _ in _leaves(ApplianceConfig().model_dump(mode="json"))}
    assert example_keys == schema_keys
    assert load_config(EXAMPLE, env={}).config == ApplianceConfig()
    text = EXAMPLE.read_text()
    for key in schema_keys:  # each key has a comment somewhere above it in its section
        assert f"{key.rsplit('.', 1)[-1]}:" in text


def test_cli_check_and_show(tmp_path: Path) -> None:
    main = _write(tmp_path / "appliance.yaml", {"scheduler": {"queue_size": 2}})
    ok = subprocess.run([LLM_TPU, "config", "check", "--config", str(main)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    shown = subprocess.run(
        [LLM_TPU, "config", "show", "--config", str(main), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    values = json.loads(shown.stdout)["values"]
    assert values["scheduler.queue_size"] == {"value": 2, "source": str(main)}
    assert values["server.socket_mode"]["value"] == "0660"
    _write(tmp_path / "conf.d" / "90-typo.yaml", {"modle": {"ref": "x"}})
    bad = subprocess.run([LLM_TPU, "config", "check", "--config", str(main)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "90-typo.yaml: modle: unknown key" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ")


def test_model_section_engine_options_reach_the_engine(tiny_hf: Path) -> None:
    """model.threads and host_quant (and libdir, decrypt_lib) are passed to the engine the service opens;
    --host-quant on the command line wins over the config."""
    import torch

    from appliance.config.schema import ModelSection
    from appliance.models.loader import load_model as load_served_model

    before = torch.get_num_threads()
    try:
        served = load_served_model(ModelSection(ref=str(tiny_hf), engine="host", threads=1))
        assert served.engine.info.details["threads"] == "1"
        assert served.engine.info.details["quant"] == "none"  # the default
        served.close()
        args = argparse.Namespace(model=str(tiny_hf), engine="host", threads=1, host_quant="int4")
        served = load_served_model(config_from_args(args).model)
        assert served.engine.info.details["quant"] == "int4"
        served.close()
    finally:
        torch.set_num_threads(before)


def test_keep_alive_durations() -> None:
    from pydantic import ValidationError

    from appliance.config.durations import parse_keep_alive

    assert parse_keep_alive(0) == 0.0 and parse_keep_alive("0") == 0.0
    assert parse_keep_alive(-1) is None and parse_keep_alive("-1") is None and parse_keep_alive("-5m") is None
    assert parse_keep_alive("5m") == 300.0 and parse_keep_alive("1h30m") == 5400.0
    assert parse_keep_alive("300ms") == pytest.approx(0.3) and parse_keep_alive(2.5) == 2.5
    for bad in ("soon", "5x", "", "m5"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_keep_alive(bad)
    with pytest.raises(ValidationError, match="keep_alive 'forever' is not a duration"):
        ApplianceConfig.model_validate({"model": {"keep_alive": "forever"}})
