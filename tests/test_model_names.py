"""Model names: one grammar (appliance/models/names.py) for import, pull, rm, compile and the API.

A name is one directory in the store; `--name .`, `../x`, `/abs` or `a/b` must be refused before
anything is touched: the store stays byte-identical and nothing outside it is moved or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli.main import main
from appliance.errors import InvalidModelName
from appliance.models.names import MODEL_NAME_GRAMMAR, check_model_name, derive_model_name
from provisioning import install

TINY = Path(__file__).parent / "fixtures/tiny-qwen2"
BMODEL = TINY / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"
BAD_NAMES = [".", "..", "../x", "/abs", "a/b", "", "-rf", ".hidden", "x\n", "A" * 3 + "/..", "a" * 129, "Big"]


@pytest.mark.parametrize("name", ["tiny", "qwen2-7b-int4", "qwen1.5-1.8b:int4", "a_b", "0"])
def test_good_names_pass(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_refused_with_the_grammar(name: str) -> None:
    with pytest.raises(InvalidModelName) as err:
        check_model_name(name)
    assert MODEL_NAME_GRAMMAR in (err.value.hint or "")
    assert err.value.exit_code == 2 and err.value.http_status == 400


@pytest.mark.parametrize(
    ("stem", "name"),
    [("Qwen2-7B_int4", "qwen2-7b_int4"), ("..", "model"), ("my model (v2)", "my-model-v2"), ("a/b", "a-b")],
)
def test_derived_names_are_made_valid(stem: str, name: str) -> None:
    assert derive_model_name(stem) == name
    check_model_name(name)


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[str(Path(dirpath, d).relative_to(root))] = "dir"
        for f in files:
            p = Path(dirpath, f)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def populated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A store with two models, and beside it a directory that looks like a model (bait for ../x)."""
    store = tmp_path / "models"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(store))
    src = tmp_path / "src"
    src.mkdir()
    (src / BMODEL.name).write_bytes(BMODEL.read_bytes())
    (src / "tokenizer.json").write_bytes((TINY / "hf/tokenizer.json").read_bytes())
    install.import_model(src, "one")
    install.import_model(src, "two")
    bait = tmp_path / "x"
    bait.mkdir()
    (bait / "manifest.json").write_text(json.dumps({"name": "x"}))
    return store, tmp_path


def _commands(src: Path, name: str) -> list[list[str]]:
    return [
        ["models", "import", str(src / BMODEL.name), "--name", name],
        ["models", "import", str(src), "--name", name],
        ["models", "pull", str(src / BMODEL.name), "--tokenizer", str(src), "--name", name],
        ["models", "compile", str(TINY / "hf"), "--name", name],
        ["models", "rm", name],
    ]


@pytest.mark.parametrize("name", [".", "..", "../x", "/abs", "a/b", "../models", "one/../two"])
def test_cli_refuses_bad_names_and_touches_nothing(
    populated: tuple[Path, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store, tmp = populated
    name = str(tmp / "x") if name == "/abs" else name
    before, around = _snapshot(store), _snapshot(tmp)
    for argv in _commands(tmp / "src", name):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: invalid model name"), (argv, err)
        assert "hint:" in err and "Traceback" not in err
        assert _snapshot(store) == before, argv
        assert _snapshot(tmp) == around, argv
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["one", "two"]


def test_cli_process_exits_2_without_traceback(populated: tuple[Path, Path]) -> None:
    store, tmp = populated
    before = _snapshot(store)
    llm_tpu = str(Path(sys.executable).with_name("llm-tpu"))
    env = {**os.environ, "LLM_TPU_MODELS_DIR": str(store)}
    proc = subprocess.run(
        [llm_tpu, "models", "import", str(tmp / "src" / BMODEL.name), "--name", "."],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "invalid model name '.'" in proc.stderr
    assert _snapshot(store) == before


def test_library_calls_refuse_too(populated: tuple[Path, Path]) -> None:
    store, tmp = populated
    before = _snapshot(store)
    for call in (
        lambda: install.remove_model(".."),
        lambda: install.import_model(tmp / "src", "."),
        lambda: install.install_files("../y", [tmp / "src" / BMODEL.name]),
    ):
        with pytest.raises(InvalidModelName):
            call()
    assert _snapshot(store) == before
    assert not (tmp / "y").exists()


def test_derived_name_from_an_odd_file_name_installs(populated: tuple[Path, Path]) -> None:
    store, tmp = populated
    odd = tmp / "Odd Name_V2.bmodel"
    odd.write_bytes(BMODEL.read_bytes())
    path = install.import_model(odd)
    assert path == store / "odd-name_v2"


def test_help_documents_the_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["models", "import", "--help"])
    assert MODEL_NAME_GRAMMAR in capsys.readouterr().out.replace("\n", "")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert MODEL_NAME_GRAMMAR in readme
