"""models pull/import/rm against a real HTTP server on 127.0.0.1 (Range, corruption, drops, disk full)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.atomic import sha256_file
from appliance.errors import DownloadError, ModelNotFound
from appliance.models.manifest import read_manifest
from provisioning import install
from provisioning.catalog import catalog
from provisioning.pull import pull

TINY = Path(__file__).parent / "fixtures/tiny-qwen2"
BMODEL = TINY / "tiny-qwen2_bf16_seq64_1dev_sample.bmodel"


class Files(ThreadingHTTPServer):
    files: dict[str, bytes]
    drop_after: int | None = None
    corrupt: bool = False
    ranges: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Files

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if self.server.corrupt:
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.server.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.drop_after is not None:
            body = body[: self.server.drop_after]
            self.server.drop_after = None
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Files]:
    srv = Files(("127.0.0.1", 0), Handler)
    tok = io.BytesIO()
    with zipfile.ZipFile(tok, "w") as zf:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            zf.write(TINY / "hf" / name, f"token_config/{name}")
    srv.files = {"/m/tiny_bf16_seq64_1dev.bmodel": BMODEL.read_bytes(), "/m/token_config.zip": tok.getvalue()}
    srv.ranges = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(root))
    return root


def url(srv: Files, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


SHA = hashlib.sha256(BMODEL.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fixture model's tokenizer files alone (what --tokenizer DIR points at)."""
    d = tmp_path_factory.mktemp("tok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).write_bytes((TINY / "hf" / name).read_bytes())
    return str(d)


def visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_pull_installs_with_manifest(server: Files, store: Path) -> None:
    path = pull(
        url(server, "/m/tiny_bf16_seq64_1dev.bmodel"),
        name="tiny",
        sha256=SHA,
        tokenizer=url(server, "/m/token_config.zip"),
        progress=False,
    )
    m = read_manifest(path)
    assert path == store / "tiny" and m.name == "tiny"
    assert m.max_seq_len == 64  # from the bmodel, not the name
    assert m.memory_need_bytes and m.memory_need_bytes > 865352  # model_tool's figure + io_alone
    assert m.extra["tokenizer_dir"] == "token_config"
    for f in m.files:
        assert sha256_file(path / f.path) == f.sha256
    assert [f.sha256 for f in m.weights] == [SHA]
    assert m.checksum and visible(store) == ["tiny"]


def pull_tiny(server: Files, tok_dir: str) -> Path:
    """The tiny bmodel pulled from the test server, checksummed, with the tokenizer directory."""
    return pull(
        url(server, "/m/tiny_bf16_seq64_1dev.bmodel"),
        name="tiny",
        sha256=SHA,
        tokenizer=tok_dir,
        progress=False,
    )


def test_interrupted_download_resumes(server: Files, store: Path, tok_dir: str) -> None:
    server.drop_after = 300_000
    with pytest.raises(DownloadError, match="interrupted") as info:
        pull_tiny(server, tok_dir)
    assert "resumes" in (info.value.hint or "")
    assert visible(store) == []
    kept = next((store / ".downloads/tiny").glob("*.part")).stat().st_size
    assert 0 < kept <= 300_000
    pull_tiny(server, tok_dir)
    assert server.ranges == [f"bytes={kept}-"]
    assert sha256_file(store / "tiny/tiny_bf16_seq64_1dev.bmodel") == SHA


def test_corrupt_payload_is_rejected_and_deleted(server: Files, store: Path, tok_dir: str) -> None:
    server.corrupt = True
    with pytest.raises(DownloadError, match="sha256"):
        pull_tiny(server, tok_dir)
    assert visible(store) == []
    assert not list((store / ".downloads/tiny").glob("*.part"))


def test_missing_url_is_a_clear_error(server: Files, store: Path, tok_dir: str) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        pull(url(server, "/m/nope.bmodel"), tokenizer=tok_dir, progress=False)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (CI runs as root): {proc.stderr.decode()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_leaves_no_model_and_resumes(
    server: Files, small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch, tok_dir: str
) -> None:
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(small_tmpfs))
    with pytest.raises(DownloadError, match="disk full"):
        pull_tiny(server, tok_dir)
    assert visible(small_tmpfs) == []
    kept = next((small_tmpfs / ".downloads/tiny").glob("*.part")).stat().st_size
    assert 0 < kept < len(BMODEL.read_bytes())
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_tmpfs)], check=True)
    pull_tiny(server, tok_dir)
    assert server.ranges == [f"bytes={kept}-"]
    assert visible(small_tmpfs) == ["tiny"]


def test_import_and_rm(store: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / BMODEL.name).write_bytes(BMODEL.read_bytes())
    (src / "tokenizer.json").write_bytes((TINY / "hf/tokenizer.json").read_bytes())
    path = install.import_model(src, "mine")
    m = read_manifest(path)
    assert {f.role for f in m.files} == {"weights", "tokenizer"} and m.max_seq_len == 64
    again = install.import_model(path, "mine2")  # a model dir with a manifest imports too
    assert read_manifest(again).checksum == m.checksum
    install.remove_model("mine")
    assert visible(store) == ["mine2"]
    with pytest.raises(ModelNotFound):
        install.remove_model("mine")


def test_catalog_covers_the_seed_models() -> None:
    entries = {e.name: e for e in catalog()}
    # every model and quantization the seeds' download scripts name (issue 12)
    assert set(entries) == {
        "qwen1.5-1.8b-int4", "qwen1.5-1.8b-int8", "qwen1.5-4b-int4", "qwen1.5-7b-int4",
        "qwen2-1.5b-int4", "qwen2-1.5b-int8", "qwen2-7b-int4", "qwen2-7b-int8",
        "qwen-7b-int4", "qwen-7b-int8", "baichuan2-7b-int4", "baichuan2-7b-int8", "wizardcoder-15b-int4",
    }  # fmt: skip
    for e in entries.values():
        assert e.vendor_file.endswith("_1dev.bmodel") or "_1dev_" in e.vendor_file, e.name
        assert e.quantization in e.vendor_file and e.memory_mib > 0
    formats = {e.family: (e.tokenizer_format, e.template) for e in entries.values()}
    assert formats == {
        "qwen": ("tiktoken", "chatml"),
        "qwen2": ("fast", "tokenizer"),
        "baichuan2": ("sentencepiece", "baichuan2"),
        "wizardcoder": ("bpe", "wizardcoder"),
    }
    # the vendor README thresholds where they exist (sophgo-facts.md section 7)
    assert entries["baichuan2-7b-int8"].memory_mib == 9216 and entries["qwen-7b-int4"].memory_mib == 4608
    assert entries["wizardcoder-15b-int4"].tokenizer is None  # the vendor ships it in a git repository


def test_cli_models_rm_unknown_is_clean_error(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli.main import main

    assert main(["models", "rm", "ghost"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no installed model 'ghost'") and "Traceback" not in err
