"""`models pull` of a bare .bmodel needs a tokenizer (--tokenizer DIR|URL|catalog name), and dfss
downloads show the file's growth.

FAKE dfss (the vendor SFTP is unreachable here): a ``dfss`` module on PYTHONPATH, run by our real
subprocess call, that records its argv and writes the requested file into its working directory as the
real tool does (a .zip request gets the tokenizer archive the test provides, anything else the fixture
bmodel), optionally pausing halfway until the test has seen the partial file.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from support.tokenizer_fixtures import sentencepiece_dir

from appliance.cli.main import main
from appliance.errors import DownloadError, ModelFormatError
from appliance.generation.tokenizer import ChatTokenizer
from appliance.models.manifest import read_manifest
from provisioning.download import dfss_download
from provisioning.pull import pull

TINY = Path(__file__).parent / "fixtures/tiny-qwen2"
BMODEL = TINY / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"

FAKE_DFSS = """\
import json, os, pathlib, sys, time
log = pathlib.Path(os.environ["FAKE_DFSS_LOG"])
log.write_text(log.read_text() + json.dumps(sys.argv[1:]) + "\\n" if log.exists() else json.dumps(sys.argv[1:]) + "\\n")
url = sys.argv[1]
name = url.rsplit("/", 1)[1]
src = os.environ["FAKE_DFSS_ZIP"] if name.endswith(".zip") else os.environ["FAKE_DFSS_BMODEL"]
data = pathlib.Path(src).read_bytes()
go = os.environ.get("FAKE_DFSS_GO")
with open(name, "wb") as out:
    out.write(data[: 1 << 20]); out.flush()
    if go:  # wait (bounded) until the test has seen the partial file, then finish
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
    out.write(data[1 << 20 :])
"""


@pytest.fixture
def fake_dfss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "fakepkgs/dfss"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_DFSS)
    archive = tmp_path / "token_config.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            zf.write(TINY / "hf" / name, f"token_config/{name}")
    log = tmp_path / "dfss-calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(pkg.parent))
    monkeypatch.setenv("FAKE_DFSS_LOG", str(log))
    monkeypatch.setenv("FAKE_DFSS_ZIP", str(archive))
    monkeypatch.setenv("FAKE_DFSS_BMODEL", str(BMODEL))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(root))
    return root


def test_bare_bmodel_without_tokenizer_is_refused_before_downloading(
    fake_dfss: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DownloadError, match=r"bare \.bmodel.*nothing was downloaded") as err:
        pull("sophon-demo/Qwen1_5/qwen1.5-1.8b_int4_1dev.bmodel", progress=False)
    assert "--tokenizer DIR" in (err.value.hint or "")
    # WizardCoder: the catalog knows the vendor ships no tokenizer archive
    assert main(["models", "pull", "wizardcoder-15b-int4"]) != 0
    out = capsys.readouterr().err
    assert "publishes no tokenizer archive for wizardcoder-15b-int4" in out and "--tokenizer" in out
    assert "Traceback" not in out
    assert calls(fake_dfss) == []
    assert not store.exists() or not any(store.iterdir())


def test_catalog_pull_fetches_its_tokenizer_archive(
    fake_dfss: Path, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "pull", "qwen1.5-1.8b-int4"]) == 0
    path = store / "qwen1.5-1.8b-int4"
    assert [c[0] for c in calls(fake_dfss)] == [
        "--url=open@sophgo.com:sophon-demo/Qwen1_5/token_config.zip",
        "--url=open@sophgo.com:sophon-demo/Qwen1_5/qwen1.5-1.8b_int4_1dev.bmodel",
    ]
    m = read_manifest(path)
    assert m.extra["tokenizer_dir"] == "token_config" and m.template == "tokenizer"
    # the vendor gives no checksum: the first verified download's is recorded in the manifest, and said
    assert m.weights[0].sha256 == hashlib.sha256(BMODEL.read_bytes()).hexdigest() and m.checksum
    assert m.extra["weights_sha256_source"] == "first download"
    err = capsys.readouterr().err
    assert f"no published checksum for qwen1.5-1.8b-int4: recorded sha256 {m.weights[0].sha256}" in err


def test_tokenizer_from_a_directory_or_a_catalog_name(fake_dfss: Path, store: Path, tmp_path: Path) -> None:
    sp = sentencepiece_dir(tmp_path / "baichuan2-tokenizer")
    (sp / "model.safetensors").write_bytes(b"not copied")  # weights beside a tokenizer stay out
    path = pull("baichuan2-7b-int4", tokenizer=str(sp), progress=False)
    m = read_manifest(path)
    assert m.template == "baichuan2" and m.family == "baichuan2"
    assert m.extra["tokenizer_dir"] == "token_config"
    assert not (path / "token_config/model.safetensors").exists()
    tok = ChatTokenizer.from_dir(path / "token_config")
    assert tok.token_to_id("<reserved_106>") == 195
    # --tokenizer CATALOG-NAME: that model's archive, for a bmodel pulled by its dfss path
    path = pull(
        "sophon-demo/Qwen1_5/qwen2-1.5b_int4_seq512_1dev.bmodel", tokenizer="qwen2-7b-int4", progress=False
    )
    assert calls(fake_dfss)[-2][0].endswith("sophon-demo/Qwen1_5/token_config.zip")
    assert (path / "token_config/tokenizer.json").is_file()
    with pytest.raises(DownloadError, match="neither a directory, a file, a URL nor a catalog name"):
        pull("x.bmodel", tokenizer="no-such-model", progress=False)


def test_an_archive_without_a_tokenizer_is_refused_and_the_download_kept(
    fake_dfss: Path, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("README.txt", "no tokenizer here")
    monkeypatch.setenv("FAKE_DFSS_ZIP", str(empty))
    with pytest.raises(ModelFormatError, match=r"brought no tokenizer.*nothing was installed"):
        pull("qwen1.5-4b-int4", progress=False)
    assert not (store / "qwen1.5-4b-int4").exists()
    # the weights stay in the download area: the next attempt (with a tokenizer) does not fetch them again
    assert (store / ".downloads/qwen1.5-4b-int4/qwen1.5-4b_int4_1dev.bmodel").is_file()


class Watcher(io.StringIO):
    """A progress stream that lets the fake dfss finish once a partial size has been shown."""

    def __init__(self, go: Path) -> None:
        super().__init__()
        self.go = go

    def write(self, text: str) -> int:
        if " 1.0/" in text or " 1.0 MiB" in text:
            self.go.touch()
        return super().write(text)


def test_dfss_download_shows_the_file_growing(
    fake_dfss: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = tmp_path / "go"
    big = TINY / "tiny-qwen2_bf16_seq64_1dev.bmodel"  # 6.1 MiB: the fake pauses after 1 MiB
    monkeypatch.setenv("FAKE_DFSS_GO", str(go))
    monkeypatch.setenv("FAKE_DFSS_BMODEL", str(big))
    stream = Watcher(go)
    size = big.stat().st_size
    got = dfss_download(
        "sophon-demo/x/big_int4_1dev.bmodel", tmp_path / "dl", expected_bytes=size, stream=stream, poll_s=0.05
    )
    assert got.read_bytes() == big.read_bytes()
    shown = stream.getvalue().split("\r")
    assert go.exists(), "no progress line showed the partial file"
    assert any(" 1.0/6.1 MiB" in line and "16%" in line for line in shown)  # growth against the size
    assert shown[-1].startswith("big_int4_1dev.bmodel [") and "100%" in shown[-1] and shown[-1].endswith("\n")
