"""Device ids (model.devices, --devid 2,3) choose the chips of a multi-chip bmodel; a count that does not
match the bmodel is a clear error before any runtime is opened."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from appliance.config import load_config
from appliance.engine.bmrt.engine import BmrtEngine
from appliance.engine.options import check_device_count, parse_device_ids
from appliance.engine.sail import SailEngine
from appliance.errors import ConfigError, ModelLoadError

TINY = Path(__file__).parent / "fixtures/tiny-qwen2"
BMODEL = TINY / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"  # compiled for one device


def test_device_id_forms() -> None:
    assert parse_device_ids("2,3") == (2, 3)
    assert parse_device_ids(" 1 ") == (1,)
    assert parse_device_ids([0, "1"]) == (0, 1)
    assert parse_device_ids(4) == (4,)
    for bad, why in (
        ("2,x", "not a whole number"),
        ("1,1", "twice"),
        ("-1", "not a whole number"),
        ("", "no device ids"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_device_ids(bad)
    assert check_device_count("m.bmodel", 2, None) == [0, 1]
    assert check_device_count("m.bmodel", 2, (2, 3)) == [2, 3]


def test_config_model_devices(tmp_path: Path) -> None:
    cfg = tmp_path / "appliance.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"devices": [2, 3]}}))
    assert load_config(cfg, env={}).config.model.devices == (2, 3)
    assert load_config(cfg, env={"LLM_TPU_MODEL__DEVICES": "0,1"}).config.model.devices == (0, 1)
    assert load_config(cfg, overrides={"model.devices": [5]}, env={}).config.model.devices == (5,)
    cfg.write_text(yaml.safe_dump({"model": {"devices": "2,two"}}))
    with pytest.raises(ConfigError, match=r"model\.devices.*'two' is not a whole number"):
        load_config(cfg, env={})


def test_count_mismatch_is_a_clear_error_on_both_engines() -> None:
    with pytest.raises(
        ModelLoadError, match=r"compiled for 1 device\(s\), but 2 device id\(s\) were given \(2,3\)"
    ) as err:
        BmrtEngine.open(BMODEL, devices=[2, 3], allow_cmodel=True)
    assert "--devid 0" in (err.value.hint or "") and "model.devices" in (err.value.hint or "")
    # sail: the check comes before the SDK is touched (a bare namespace stands in for sophon.sail)
    with pytest.raises(ModelLoadError, match="compiled for 1 device"):
        SailEngine.open(BMODEL, devices=[0, 1], sail=types.SimpleNamespace())


def test_cli_devid(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "appliance.cli.main"]
    env = {**os.environ, "LLM_TPU_BMRT_LIBDIR": str(tmp_path)}  # never reached: the count check is first
    run = subprocess.run(
        [*cli, "ask", "-m", str(BMODEL), "--engine", "bmrt", "--devid", "2,3", "hi"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert "error: tiny-qwen2_bf16_seq64_1dev_sample.bmodel is compiled for 1 device(s)" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([*cli, "ask", "--devid", "2,x", "hi"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "'x' is not a whole number" in run.stderr
