"""The model package llm-tpu-model-smollm2-135m: built by packaging/llm-tpu-model-smollm2-135m/build-deb.sh
(as `make model-deb` does, here from a tiny compiled bmodel instead of the 135M one), lintian-clean,
installed and removed by the real dpkg in a private root; and what ``default`` means with and without a
TPU.

The TPU is faked at its device node only: TPU_DEVICE_GLOB points at a plain file standing for
/dev/bm-sophon0 (a node that cannot exist on this machine), so the real presence check runs on it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.vendor_runtime import FIXTURES

from appliance import paths
from appliance.cli.main import main
from appliance.engine import select
from appliance.models import embedded
from appliance.models.store import ModelStore
from appliance.models.tpu_default import PACKAGE, TPU_BUILDS, TPU_DEFAULT, packaged_tpu_default
from provisioning.install import store_root

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "packaging" / PACKAGE / "build-deb.sh"
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SYSTEM_ENV}, check=False)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built from the tiny fixture compiled under the real build's name."""
    tmp = tmp_path_factory.mktemp("model-deb")
    model = tmp / "models" / TPU_DEFAULT
    args = ["models", "compile", str(FIXTURES / "hf"), "--quant", "bf16", "--seq", "64", "--sample"]
    assert main([*args, "-o", str(model), "--work-dir", str(tmp / "work"), "--json"]) == 0
    return Path(_run([str(BUILD), str(tmp / "out"), str(model)]).strip())


@pytest.fixture
def dpkg_root(tmp_path: Path) -> Path:
    """An empty dpkg database of its own: dpkg --root installs there, not on this machine."""
    for d in ("info", "updates", "triggers"):
        (tmp_path / "root" / "var" / "lib" / "dpkg" / d).mkdir(parents=True)
    (tmp_path / "root" / "var" / "lib" / "dpkg" / "status").touch()
    return tmp_path / "root"


@pytest.fixture
def fake_tpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    node = tmp_path / "dev" / "bm-sophon0"
    monkeypatch.setattr(select, "TPU_DEVICE_GLOB", str(node.parent / "bm-sophon*"))
    return node


def _dpkg(root: Path, *args: str) -> str:
    return _run(["dpkg", f"--root={root}", "--log=/dev/null", *args])


def test_package_is_architecture_independent_and_lintian_clean(deb: Path) -> None:
    fields = _run(["dpkg-deb", "--field", str(deb), "Package", "Architecture", "Installed-Size"])
    assert f"Package: {PACKAGE}" in fields and "Architecture: all" in fields
    listing = _run(["dpkg-deb", "--contents", str(deb)])
    model_dir = f"./{(paths.PACKAGED_MODELS_DIR / TPU_DEFAULT).relative_to('/')}/"
    for f in ("manifest.json", f"{TPU_DEFAULT}.bmodel", "token_config/tokenizer.json"):
        assert f" {model_dir}{f}\n" in listing, f
    assert " ./usr/share/doc/llm-tpu-model-smollm2-135m/copyright\n" in listing
    assert "root/root" in listing and " ./var/" not in listing  # data in /usr/share, no state
    _run(["lintian", "--fail-on", "warning", str(deb)])


def test_installed_package_is_the_default_only_with_a_tpu(deb: Path, dpkg_root: Path, fake_tpu: Path) -> None:
    _dpkg(dpkg_root, "--install", str(deb))
    models = dpkg_root / paths.PACKAGED_MODELS_DIR.relative_to("/")
    store = ModelStore([dpkg_root / "var" / "lib" / "llm-tpu" / "models", models])
    assert packaged_tpu_default(store.roots) is None  # no device node yet
    assert store.resolve("default").name == embedded.NAME

    fake_tpu.parent.mkdir()
    fake_tpu.touch()
    chosen = store.resolve("default")
    assert chosen.path == models / TPU_DEFAULT and chosen.name == TPU_DEFAULT
    assert store.resolve(None).path == chosen.path
    assert chosen.manifest.engine == "auto" and chosen.weights_path.suffix == ".bmodel"
    assert (chosen.tokenizer_dir / "tokenizer.json").is_file()
    # the embedded model's own names keep meaning the host copy, on a TPU box too
    assert store.resolve(embedded.NAME).name == embedded.NAME

    _dpkg(dpkg_root, "--remove", PACKAGE)
    assert not models.exists()
    assert store.resolve("default").name == embedded.NAME


def test_info_json_names_the_packaged_build(
    deb: Path,
    dpkg_root: Path,
    fake_tpu: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _dpkg(dpkg_root, "--install", str(deb))
    fake_tpu.parent.mkdir()
    fake_tpu.touch()
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(dpkg_root / paths.PACKAGED_MODELS_DIR.relative_to("/")))
    assert main(["models", "info", "default", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == TPU_DEFAULT and info["quantization"] == "bf16" and info["max_seq_len"] == 64
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["note"]) for m in listed["models"]] == [(TPU_DEFAULT, "default on this TPU box")]
    embedded_note = (listed["embedded_model"] or {}).get("note", "")
    assert not embedded_note.startswith("embedded default") and not embedded_note.endswith("the default")


def test_packaged_models_are_searched_last_and_never_the_install_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLM_TPU_MODELS_DIR")
    dirs = paths.model_dirs()
    assert dirs[-1] == paths.PACKAGED_MODELS_DIR == Path("/usr/share/llm-tpu/models")
    assert store_root() == paths.SYSTEM_MODELS_DIR != paths.PACKAGED_MODELS_DIR
    assert set(TPU_BUILDS.values()) == {TPU_DEFAULT, "smollm2-135m-instruct-w4bf16-seq512"}
